"""``onestep-rl bench-merge``: one report from several ``onestep-rl bench`` runs.

    onestep-rl bench --output runs/bench/rl-s5 --seed 5 --data runs/bench/data &
    onestep-rl bench --output runs/bench/rl-s6 --seed 6 --data runs/bench/data &
    onestep-rl bench-merge runs/bench/rl-s5 runs/bench/rl-s6 --output runs/bench/rl-s5-6

A bench run is one process; seeds are independent (each collects its own data and trains every
agent on it), and so are the agents of one seed (each trains alone on that seed's data), so
runs can go side by side on several cores or machines and be joined after: one per seed, or
one per agent on a shared ``--data`` folder (``--agents fql`` beside ``--agents ofql,dql``).
The merge refuses runs whose settings differ (iterations, episodes, evaluation points, action
selection, an agent's alpha on a dataset), an agent on a ``(dataset, seed)`` row twice, a row
whose parts were trained on different data (behaviour returns differ), and a merged row that
lacks one of the agents, so the joined table is what one ``--seeds`` run with the same
settings would have written. Rows are labelled
``"{dataset} s{seed}"``, the across-seed summary (:mod:`onestep.rl.bench_seeds`) is recomputed;
timings are the median of the runs' medians over the runs that timed (each run's own DQL ÷ OFQL
ratios are listed, as runs side by side share the cores; runs made with ``--no-timing`` add
none), and each run's bandit coverage is kept under its seed (``--no-bandit`` runs add none).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onestep.rl.bench_seeds import run_label, seed_summary

__all__ = ["load_run", "main", "merge_results"]

#: Settings that must agree for rows of different runs to sit in one table.
SAME_SETTINGS = ("iterations", "episodes", "eval_iterations", "candidates")
TIMING_SHAPE = ("obs_dim", "act_dim", "threads")


def load_run(folder: Path) -> dict[str, Any]:
    """A bench run's ``results.json`` (``folder`` may also name the file itself)."""
    path = folder / "results.json" if folder.is_dir() else folder
    if not path.is_file():
        raise ValueError(f"{folder}: no results.json (is it an `onestep-rl bench` output?)")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    missing = [k for k in ("agents", "iterations", "returns", "timing") if k not in results]
    if missing:
        raise ValueError(f"{path}: not a bench results file (missing {', '.join(missing)})")
    return results


def _median_timing(timings: list[dict[str, Any]]) -> dict[str, Any]:
    first = timings[0]
    for t in timings[1:]:
        for key in TIMING_SHAPE:
            if t.get(key) != first.get(key):
                raise ValueError(f"timings differ in {key}: {first.get(key)} vs {t.get(key)}")
    merged: dict[str, Any] = {k: first[k] for k in TIMING_SHAPE if k in first}
    candidates: dict[str, Any] = {}
    for t in timings:
        for name, n in (t.get("candidates") or {}).items():
            if candidates.setdefault(name, n) != n:
                raise ValueError(
                    f"timings differ in {name}'s candidates: {candidates[name]} vs {n}"
                )
    if candidates:
        merged["candidates"] = candidates
    for kind in ("act_ms", "step_ms"):
        names = list(dict.fromkeys(n for t in timings for n in t[kind]))
        merged[kind] = {
            n: statistics.median(t[kind][n] for t in timings if n in t[kind]) for n in names
        }
    return merged


def _run_ratios(timing: dict[str, Any]) -> dict[str, float] | None:
    act, step = timing["act_ms"], timing["step_ms"]
    if "ofql" not in act or "dql" not in act:
        return None
    return {"act": act["dql"] / act["ofql"], "step": step["dql"] / step["ofql"]}


def _bandits(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each run's bandit coverage under the seed it trained with (the run's first seed)."""
    found: dict[str, Any] = {}
    for run in runs:
        if run.get("bandit"):
            found.setdefault(str(run["seed"]), run["bandit"])
    return dict(sorted(found.items(), key=lambda kv: int(kv[0])))


def _agent_union(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Every run's agents, in the bench's order (OFQL, FQL, DQL), others after."""
    from onestep.rl.bench import AGENT_NAMES

    found = list(dict.fromkeys(a for run in runs for a in run["agents"]))
    order = {a: i for i, a in enumerate(AGENT_NAMES)}
    return sorted(found, key=lambda a: order.get(a, len(order) + found.index(a)))


def _merged_alphas(runs: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Each dataset's alpha per agent; refuses an agent trained with two alphas on a dataset.

    Only the value must agree: the same alpha passed as ``--alpha`` in one run and read from the
    dataset's config in another trains the same agent, and the first run's source is kept.
    """
    alphas: dict[str, dict[str, Any]] = {}
    for run, name in zip(runs, names, strict=True):
        for dataset, chosen in (run.get("alpha_by_dataset") or {}).items():
            known = alphas.setdefault(dataset, {})
            for agent, alpha in chosen.items():
                if known.setdefault(agent, alpha)["value"] != alpha["value"]:
                    raise ValueError(
                        f"{name} trains {agent} on {dataset} with other alphas than another run "
                        f"({alpha['value']:g} from {alpha['source']} vs {known[agent]['value']:g} "
                        f"from {known[agent]['source']}); merge the runs of each alpha separately"
                    )
    return alphas


def _joined_rows(
    runs: Sequence[dict[str, Any]], names: Sequence[str], agents: Sequence[str]
) -> dict[tuple[str, int], dict[str, Any]]:
    """``(dataset, seed) -> row`` with every agent's entry, from whichever run trained it."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    owners: dict[tuple[str, int, str], str] = {}  # (dataset, seed, agent) -> run
    for run, name in zip(runs, names, strict=True):
        for row in run["returns"].values():
            key = (row["dataset"], row["seed"])
            joined = rows.setdefault(key, {k: v for k, v in row.items() if k not in agents})
            if joined["behaviour_return"] != row["behaviour_return"]:
                raise ValueError(
                    f"{row['dataset']} seed {row['seed']} was trained on different data in "
                    f"{name} and another run (behaviour return {row['behaviour_return']} vs "
                    f"{joined['behaviour_return']}): give them the same --data folder"
                )
            for agent in run["agents"]:
                if agent not in row:
                    raise ValueError(
                        f"{name} lists {agent} but its {row['dataset']} seed {row['seed']} row "
                        "has no entry for it: the results file is incomplete, rerun that bench"
                    )
                if (*key, agent) in owners:
                    raise ValueError(
                        f"{agent} on {row['dataset']} seed {row['seed']} is in both "
                        f"{owners[(*key, agent)]} and {name}"
                    )
                owners[(*key, agent)] = name
                joined[agent] = row[agent]
    for (dataset, seed), row in rows.items():
        missing = [a for a in agents if a not in row]
        if missing:
            raise ValueError(
                f"{dataset} seed {seed} has no {', '.join(missing)} in any run: every row of "
                f"the merged table needs every agent ({', '.join(agents)})"
            )
    return rows


def merge_results(runs: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Join bench results (``names``: where each came from, for the report and errors).

    Raises:
        ValueError: fewer than two runs, settings that differ, an agent's ``(dataset, seed)``
            row in two runs, parts of a row trained on different data, or a merged row that
            lacks an agent.
    """
    if len(runs) < 2:
        raise ValueError("give at least two bench runs to merge")
    base, base_name = runs[0], names[0]
    for run, name in zip(runs[1:], names[1:], strict=True):
        for key in SAME_SETTINGS:
            if run.get(key) != base.get(key):
                raise ValueError(
                    f"{name} and {base_name} differ in {key}: {run.get(key)} vs {base.get(key)}"
                )
    agents = _agent_union(runs)
    timed = [r["timing"] for r in runs if r.get("timing")]  # --no-timing runs have none
    alphas = _merged_alphas(runs, names)
    rows = _joined_rows(runs, names, agents)
    seeds = sorted({seed for _, seed in rows})
    datasets = list(dict.fromkeys(dataset for dataset, _ in rows))
    ordered = sorted(rows, key=lambda k: (datasets.index(k[0]), k[1]))
    returns = {run_label(d, s, seeds): rows[(d, s)] for d, s in ordered}
    merged: dict[str, Any] = {k: base.get(k) for k in SAME_SETTINGS}
    merged.update(
        agents=agents,
        seed=seeds[0],
        seeds=seeds,
        alpha=base.get("alpha"),
        alpha_by_dataset=alphas,
        datasets=base.get("datasets"),
        returns=returns,
        timing=_median_timing(timed) if timed else None,
        timing_by_run={
            n: _run_ratios(r["timing"]) for r, n in zip(runs, names, strict=True) if r.get("timing")
        },
        bandit_by_seed=_bandits(runs),
        merged_from=list(names),
        wall_s_by_run={n: r.get("wall_s") for r, n in zip(runs, names, strict=True)},
    )
    if len(seeds) > 1:
        merged["across_seeds"] = seed_summary(returns, merged["agents"])
    return merged


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="onestep-rl bench-merge", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("runs", nargs="+", type=Path, help="bench output folders (or results.json)")
    p.add_argument("--output", type=Path, required=True, help="folder for results.json, report")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Merge the runs; write ``results.json`` and ``report.md`` under ``--output``."""
    from onestep.rl.bench_report import report

    args = build_parser().parse_args(argv)
    inputs = {(f if f.is_dir() else f.parent).resolve() for f in args.runs}
    if args.output.resolve() in inputs:
        raise SystemExit(
            f"onestep-rl bench-merge: --output {args.output} is one of the runs and its "
            "results.json would be overwritten; name a new folder"
        )
    try:
        runs = [load_run(folder) for folder in args.runs]
        merged = merge_results(runs, [str(folder) for folder in args.runs])
    except ValueError as err:
        raise SystemExit(f"onestep-rl bench-merge: {err}") from None
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(merged, indent=2, default=str))
    md = report(merged)
    (args.output / "report.md").write_text(md)
    print(md)
    return 0

"""``onestep-rl bench``: OFQL, FQL and DQL side by side on datasets the package collects.

    onestep-rl bench --output runs/bench/rl            # full budgets (BENCHMARKS.md)
    onestep-rl bench --output runs/bench/rl --smoke    # ~3 min on 2 cores; exits 1 if a gate fails
    onestep-rl bench --seeds 0-4 --datasets invertedpendulum-medium-expert  # 5 seeds, one run
    onestep-rl bench --alpha ofql=10,dql=3 --data runs/bench/rl/data   # one point of a sweep
    onestep-rl bench --alpha ofql=3 --agents ofql --no-bandit --no-timing  # its extra points
    onestep-rl bench-merge runs/bench/rl-s5 runs/bench/rl-s6 --output runs/bench/rl-s5-6
                                                       # seeds run side by side, one report

One run, same data and seeds for every agent (``--seeds``: each seed collects its own data, and
the report adds each agent's mean over seeds, :mod:`onestep.rl.bench_seeds`):

* **returns**: each agent trains ``--iterations`` iterations on each dataset (collected with
  :func:`~onestep.rl.collect.collect`: SAC behaviour policies trained by the package), with its
  per-task alpha (:mod:`.bench_alpha`), and is evaluated over the same seeded episodes;
  D4RL-normalised where D4RL has references, else against the dataset's own random / trained
  behaviour returns;
* **action latency** (batch 1) and **training-iteration time**, interleaved
  (:mod:`onestep.rl.bench_timing`), at the papers' network size;
* **bandit**: mode coverage of OFQL and DQL on Diffusion-QL's 2-D bandit (:mod:`.bench_bandit`).

Smoke gates: every bandit mode covered by OFQL and DQL; action latency DQL ÷ OFQL ≥ 5; every
agent trains and evaluates on a small collected dataset with finite returns.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from onestep.rl.bench_alpha import parse_alpha, run_alphas
from onestep.rl.bench_report import LATENCY_GOAL, gates, report, verdict
from onestep.rl.bench_seeds import parse_seeds, run_label, seed_summary

__all__ = ["DATASETS", "LATENCY_GOAL", "DatasetSpec", "gates", "main", "report", "verdict"]

AGENT_NAMES = ("ofql", "fql", "dql")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset the bench collects: ``collect(env, behavior, steps, train_steps=...)``.

    ``small_sac``: train the behaviour policy with :data:`~onestep.rl.behavior.sac.SMALL_SAC`
    (low-dimensional tasks, where the default SAC learns too slowly for a CPU budget).
    ``config``: the packaged config (``configs/<agent>/<config>.yaml``) whose ``alpha`` each
    agent trains with on this dataset unless ``--alpha`` names one (:mod:`.bench_alpha`).
    """

    name: str
    env: str
    behavior: str
    steps: int
    train_steps: int
    small_sac: bool = False
    config: str | None = None


DATASETS = (
    # The hopper configs carry each agent's Q weight swept on this dataset (BENCHMARKS.md).
    DatasetSpec("hopper-replay", "Hopper-v5", "replay", 50_000, 50_000, config="hopper"),
    DatasetSpec("hopper-expert", "Hopper-v5", "expert", 50_000, 50_000),
    DatasetSpec("hopper-medium", "Hopper-v5", "medium", 50_000, 50_000),
    DatasetSpec("halfcheetah-replay", "HalfCheetah-v5", "replay", 50_000, 50_000),
    # Alphas swept on seeds 5-6 at the default budget and scored on held-out seeds (BENCHMARKS.md).
    DatasetSpec("walker2d-replay", "Walker2d-v5", "replay", 50_000, 50_000, config="walker2d"),
    # Reacher learns fast: its SAC's actor returns -3 to -7.5 after 20k steps (seeds 5-14; zero
    # action -11.4), so its buffer is shorter. Alphas swept on seeds 5-6, scored on held-out
    # seeds as for walker2d (BENCHMARKS.md).
    DatasetSpec("reacher-replay", "Reacher-v5", "replay", 20_000, 20_000, config="reacher"),
    DatasetSpec(
        "invertedpendulum-medium-expert",
        "InvertedPendulum-v5",
        "medium-expert",
        20_000,
        20_000,
        small_sac=True,
    ),
)
#: What a plain ``bench`` runs (each other dataset costs another 3 x iterations of CPU time, and
#: halfcheetah-replay and walker2d-replay a 50k-step SAC run per seed first: name them with
#: --datasets).
DEFAULT_DATASETS = ("hopper-replay", "invertedpendulum-medium-expert")
SMOKE_DATASETS = (DatasetSpec("invertedpendulum-random", "InvertedPendulum-v5", "random", 2000, 0),)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="onestep-rl bench", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--output", type=Path, default=Path("runs/bench/rl"))
    p.add_argument("--smoke", action="store_true", help="tiny budgets and gates (CI)")
    p.add_argument("--iterations", type=int, default=None, help="training iterations per agent")
    p.add_argument("--episodes", type=int, default=None, help="episodes per evaluation")
    p.add_argument(
        "--eval-points",
        type=int,
        default=None,
        help="evaluations pooled per agent, spread over the second half of training "
        "(default 3; smoke 1)",
    )
    p.add_argument(
        "--datasets",
        default=None,
        help=f"comma-separated names from {', '.join(s.name for s in DATASETS)} "
        f"(default: {','.join(DEFAULT_DATASETS)})",
    )
    p.add_argument("--agents", default=",".join(AGENT_NAMES))
    p.add_argument(
        "--candidates",
        type=int,
        default=None,
        help="actions per state at act time for every agent, one drawn by softmax of Q "
        "(default: each agent's own: DQL 50 as in its paper, OFQL and FQL 1)",
    )
    p.add_argument(
        "--alpha",
        default=None,
        help="policy-loss weight per agent on every dataset, e.g. ofql=10,dql=3 (the Q term's "
        "weight for OFQL and DQL, default 1; the distillation weight for FQL, default 10); "
        "agents not named keep the dataset's config value (hopper-replay: configs/*/hopper.yaml) "
        "or else their default",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder of collected datasets (and behaviour policies) to reuse and add to "
        "(default OUTPUT/data): runs of a sweep share one collection",
    )
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0, help="one seed (default 0)")
    seeds.add_argument(
        "--seeds",
        default=None,
        help="several seeds in one run, e.g. 0,1,2 or 0-4 (instead of --seed): each seed "
        "collects its own data and trains every agent; the report adds the across-seed means",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument(
        "--no-bandit",
        action="store_true",
        help="skip the bandit coverage run (for the extra runs of a sweep; keep it in one)",
    )
    p.add_argument(
        "--no-timing",
        action="store_true",
        help="skip the latency and step-time measurement (for the extra runs of a sweep)",
    )
    p.add_argument("--no-progress", action="store_true")
    return p


def _collect(spec: DatasetSpec, data_root: Path, seed: int, progress: bool) -> Path:
    from onestep.rl.behavior.sac import SMALL_SAC
    from onestep.rl.collect import collect

    # The folder names the collection settings, so a changed spec never reuses old data.
    sac = "small-sac" if spec.small_sac else "sac"
    path = data_root / f"{spec.name}-{spec.steps}-{sac}{spec.train_steps}-s{seed}"
    if not (path / "data").exists():
        collect(
            spec.env,
            spec.behavior,
            spec.steps,
            path,
            seed=seed,
            train_steps=max(spec.train_steps, 1),
            sac_config=SMALL_SAC if spec.small_sac else None,
            cache_dir=data_root.parent / "behavior_policies",
            progress=progress,
        )
    return path


def _train_and_score(
    name: str,
    data: Path,
    spec: DatasetSpec,
    seed: int,
    args: argparse.Namespace,
    out: Path,
    alpha: float | None = None,
) -> dict[str, Any]:
    from onestep.rl.data import OfflineDataModule
    from onestep.rl.scoring import fit_and_score
    from onestep.rl.training import build_agent

    dm = OfflineDataModule(str(data), seed=seed)
    dm.setup("fit")
    settings = _agent_settings(args, alpha)
    agent = build_agent(name, dm.obs_dim, dm.act_dim, seed=seed, **settings)
    ckpt = out / "checkpoints" / f"{spec.name}-s{seed}-{name}.ckpt"
    scored = fit_and_score(
        agent,
        dm,
        args.iterations,
        spec.env,
        args.episodes,
        seed=seed,
        points=args.eval_points,
        checkpoint=ckpt,
        dataset_metadata=dm.dataset.metadata,
        progress=not args.no_progress,
    )
    points = ", ".join(f"{it}: {ret:.1f}" for it, ret in scored.by_iteration.items())
    print(
        f"[{spec.name} s{seed}] {name}: {scored.result.summary()} (pooled; by iteration {points}; "
        f"trained {scored.fit.wall_s:.0f} s)",
        flush=True,
    )
    return {**scored.to_dict(), "checkpoint": str(ckpt)}


def _act_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``--candidates`` as an agent override (nothing: each agent's own default)."""
    return {} if args.candidates is None else {"num_candidates": args.candidates}


def _agent_settings(args: argparse.Namespace, alpha: float | None) -> dict[str, Any]:
    """One agent's overrides in one dataset's runs: ``--candidates`` and ``alpha``.

    ``alpha``: :func:`~onestep.rl.bench_alpha.run_alphas`'s choice (None: the agent's default).
    """
    return {**_act_settings(args), **({} if alpha is None else {"alpha": alpha})}


def _select_specs(args: argparse.Namespace) -> tuple[DatasetSpec, ...]:
    """The datasets to run: ``--datasets`` by name, else the smoke or default set."""
    if not args.datasets:
        if args.smoke:
            return SMOKE_DATASETS
        return tuple(s for s in DATASETS if s.name in DEFAULT_DATASETS)
    wanted = [name for name in args.datasets.split(",") if name]
    known = {s.name: s for s in (*DATASETS, *SMOKE_DATASETS)}
    unknown = [name for name in wanted if name not in known]
    if unknown or not wanted:
        raise SystemExit(
            f"onestep-rl bench: unknown --datasets {unknown or args.datasets!r}; "
            f"choose from {', '.join(known)}"
        )
    return tuple(known[name] for name in wanted)


def _checked_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[list[int], tuple[str, ...]]:
    """The run's seeds and agents; sets ``args.alphas``; exits with a clear message on bad input."""
    if args.candidates is not None and args.candidates < 1:
        parser.error(f"--candidates must be >= 1, got {args.candidates}")
    if args.smoke and (args.no_bandit or args.no_timing):
        parser.error("--smoke gates on the bandit and the timings: drop --no-bandit/--no-timing")
    try:
        seeds = parse_seeds(args.seeds) if args.seeds is not None else [args.seed]
    except ValueError as err:
        raise SystemExit(f"onestep-rl bench: --seeds: {err}") from None
    agents = tuple(a for a in args.agents.split(",") if a)
    try:
        args.alphas = parse_alpha(args.alpha, agents) if args.alpha is not None else None
    except ValueError as err:
        raise SystemExit(f"onestep-rl bench: --alpha: {err}") from None
    return seeds, agents


def _bandit_and_timing(
    args: argparse.Namespace, agents: tuple[str, ...], seed: int
) -> dict[str, Any]:
    """The run's bandit coverage and timings; None for what ``--no-bandit/--no-timing`` skip."""
    from onestep.rl.bench_bandit import bandit_coverage_run
    from onestep.rl.bench_timing import time_agents

    return {
        "bandit": None
        if args.no_bandit
        else bandit_coverage_run(("ofql", "dql"), smoke=args.smoke, seed=seed),
        "timing": None
        if args.no_timing
        else time_agents(
            agents,
            repeats=7 if args.smoke else 15,
            settings={name: _act_settings(args) for name in agents},
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 1 if a smoke gate fails."""
    parser = build_parser()
    args = parser.parse_args(argv)
    seeds, agents = _checked_args(parser, args)
    import torch

    from onestep.rl.scoring import late_iterations

    if args.threads:
        torch.set_num_threads(args.threads)
    start, progress = time.perf_counter(), not args.no_progress
    args.iterations = args.iterations or (100 if args.smoke else 2000)
    args.episodes = args.episodes or (2 if args.smoke else 10)
    args.eval_points = args.eval_points or (1 if args.smoke else 3)
    try:
        eval_iterations = late_iterations(args.iterations, args.eval_points)
    except ValueError as err:
        raise SystemExit(
            f"onestep-rl bench: {err}; lower --eval-points or raise --iterations"
        ) from None
    specs = _select_specs(args)
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "agents": list(agents),
        "candidates": args.candidates,
        "alpha": args.alphas,
        "iterations": args.iterations,
        "episodes": args.episodes,
        "eval_iterations": eval_iterations,
        "seed": seeds[0],
        "seeds": seeds,
        "datasets": [asdict(s) for s in specs],
        "alpha_by_dataset": {s.name: run_alphas(agents, args.alphas, s.config) for s in specs},
        "returns": {},
    }
    results.update(_bandit_and_timing(args, agents, seeds[0]))
    from onestep.rl.data import load_dataset

    for spec in specs:
        for seed in seeds:
            data = _collect(spec, args.data or out / "data", seed, progress)
            meta = load_dataset(data).metadata
            row: dict[str, Any] = {
                "dataset": spec.name,
                "seed": seed,
                "behaviour_return": meta.get("mean_episode_return"),
            }
            chosen = results["alpha_by_dataset"][spec.name]
            for name in agents:
                alpha = chosen[name]["value"]
                row[name] = _train_and_score(name, data, spec, seed, args, out, alpha)
            results["returns"][run_label(spec.name, seed, seeds)] = row
            (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    if len(seeds) > 1:
        results["across_seeds"] = seed_summary(results["returns"], agents)
    results["wall_s"] = time.perf_counter() - start
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    md = report(results)
    (out / "report.md").write_text(md)
    print(md)
    if args.smoke:
        failures = gates(results)
        for failure in failures:
            print(f"SMOKE GATE FAILED: {failure}")
        return 1 if failures else 0
    return 0

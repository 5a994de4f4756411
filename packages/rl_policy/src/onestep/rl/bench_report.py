"""The ``onestep-rl bench`` report (markdown), its goal lines and the smoke gates.

Reads the ``results.json`` dictionary that :mod:`onestep.rl.bench` writes (or that
:mod:`onestep.rl.bench_merge` joins): returns per dataset and agent, the speed table (absent for
``--no-timing`` runs), the verdict lines, the across-seed summary and the bandit table.
"""

from __future__ import annotations

import math
from typing import Any

from onestep.rl.bench_alpha import alpha_phrase, run_alphas
from onestep.rl.bench_seeds import seed_summary_lines

__all__ = ["LATENCY_GOAL", "gates", "report", "verdict"]

LATENCY_GOAL = 5.0


def _selection_phrase(results: dict[str, Any]) -> str:
    n = results.get("candidates")
    if n is None:
        return (
            "Each agent acts with its own selection rule (DQL: 50 candidates, one drawn by "
            "softmax of Q, as in its paper; OFQL and FQL: one sample)."
        )
    if n == 1:
        return "Every agent acts with one sample (`--candidates 1`: no selection by Q)."
    return (
        f"Every agent acts with the same selection rule (`--candidates {n}`): {n} candidates, "
        "one drawn by softmax of Q."
    )


def _seeds_phrase(results: dict[str, Any]) -> str:
    seeds = results.get("seeds", [results["seed"]])
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"seeds {', '.join(map(str, seeds))} (each with its own collected data)"


def _fmt(mean: float | None, std: float | None) -> str:
    return "n/a" if mean is None or std is None else f"{mean:.1f} ± {std:.1f}"


def _alphas_by_dataset(results: dict[str, Any]) -> dict[str, Any]:
    """Each dataset's alphas; results written before per-task alphas have one ``--alpha`` set."""
    if results.get("alpha_by_dataset"):
        return results["alpha_by_dataset"]
    return {"all": run_alphas(results["agents"], results.get("alpha"), None)}


def report(results: dict[str, Any]) -> str:
    """The markdown report."""
    agents = results["agents"]
    lines = [
        "# onestep-rl bench: OFQL, FQL and DQL on collected datasets",
        "",
        f"{results['iterations']} training iterations per agent (one critic and one actor "
        f"update each), batch 256, {_seeds_phrase(results)}. Each agent is evaluated over "
        f"{results['episodes']} seeded episodes (the same for every agent) at iterations "
        f"{', '.join(map(str, results.get('eval_iterations', [results['iterations']])))}, "
        "and the episodes are pooled (mean ± std over all of them). Normalised: "
        "100 × (return − random) / (expert − random) with the reference named per dataset. "
        + _selection_phrase(results)
        + " "
        + alpha_phrase(_alphas_by_dataset(results)),
        "",
        "| dataset | behaviour return | reference | " + " | ".join(agents) + " |",
        "|---|---|---|" + "---|" * len(agents),
    ]
    for spec_name, row in results["returns"].items():
        cells = [_fmt(row[a]["normalized_mean"], row[a]["normalized_std"]) for a in agents]
        behaviour = row["behaviour_return"]
        ref = row[agents[0]]["reference"] or "none"
        shown = "n/a" if behaviour is None else f"{behaviour:.1f}"
        lines.append(f"| {spec_name} | {shown} | {ref} | " + " | ".join(cells) + " |")
    lines += ["", "Raw returns (mean ± std):", "", "| dataset | " + " | ".join(agents) + " |"]
    lines.append("|---|" + "---|" * len(agents))
    for spec_name, row in results["returns"].items():
        cells = [_fmt(row[a]["mean_return"], row[a]["std_return"]) for a in agents]
        lines.append(f"| {spec_name} | " + " | ".join(cells) + " |")
    lines += ["", "Mean return at each evaluated iteration:", ""]
    lines += ["| dataset | " + " | ".join(agents) + " |", "|---|" + "---|" * len(agents)]
    for spec_name, row in results["returns"].items():
        cells = [
            ", ".join(
                f"{it}: {ret:.1f}" for it, ret in row[a].get("returns_by_iteration", {}).items()
            )
            for a in agents
        ]
        lines.append(f"| {spec_name} | " + " | ".join(cells) + " |")
    lines += _speed_lines(results)
    lines += _merged_timing_lines(results)
    lines += ["", *verdict(results)]
    if results.get("across_seeds"):
        lines += ["", *seed_summary_lines(results["across_seeds"], agents)]
    return "\n".join(lines + _bandit_lines(results)) + "\n"


def _speed_lines(results: dict[str, Any]) -> list[str]:
    """The speed table, or a line saying the run did not time the agents."""
    t, agents = results.get("timing"), results["agents"]
    if not t:
        return ["", "### Speed: not measured in this run (`--no-timing`)"]
    act, step = t["act_ms"], t["step_ms"]
    lines = [
        "",
        f"### Speed (obs {t['obs_dim']}, action {t['act_dim']}, 3×256 networks, "
        f"{t['threads']} thread{'' if t['threads'] == 1 else 's'}, medians of interleaved rounds)",
        "",
        "| agent | action ms (batch 1) | training iteration ms (batch 256) |",
        "|---|---|---|",
    ]
    for a in agents:
        if a not in act:  # a merged report whose runs with this agent skipped the timing
            lines.append(f"| {a} | not timed | not timed |")
            continue
        n = t["candidates"].get(a, 1)
        extra = f" ({n} candidates)" if n > 1 else ""
        lines.append(f"| {a}{extra} | {act[a]:.3f} | {step[a]:.1f} |")
    if "dql_chain" in act:
        lines.append(f"| dql (bare chain, 1 sample) | {act['dql_chain']:.3f} | |")
    return lines


def _merged_timing_lines(results: dict[str, Any]) -> list[str]:
    """For a merged report (``onestep-rl bench-merge``): where the timings came from."""
    by_run = results.get("timing_by_run")
    if not by_run:
        return []
    runs = len(results.get("merged_from") or by_run)
    timed = (
        f"Merged from {runs} runs"
        if runs == len(by_run)
        else f"Merged from {runs} runs, {len(by_run)} of them timed (the others ran with "
        "`--no-timing`)"
    )
    each = "; ".join(
        f"{name}: {r['act']:.1f}× / {r['step']:.2f}×" for name, r in by_run.items() if r
    )
    ratios = (
        f"Each run's DQL ÷ OFQL action / training-iteration time: {each}."
        if each
        else "No run timed both OFQL and DQL, so no ratio is measured side by side."
    )
    return ["", f"{timed}: the times are the median of the runs' medians. {ratios}"]


def _bandit_lines(results: dict[str, Any]) -> list[str]:
    """The bandit table: one row per agent, or per agent and seed for a merged report."""
    by_seed = results.get("bandit_by_seed") or (
        {"": results["bandit"]} if results.get("bandit") else {}
    )
    if not by_seed:
        return []
    modes = next(iter(by_seed.values()))["modes"]
    lines = ["", "### Bandit (Diffusion-QL's 2-D toy): share of actions at each mode", ""]
    lines += ["| agent | " + " | ".join(modes) + " | all covered |"]
    lines += ["|---|" + "---|" * (len(modes) + 1)]
    for seed, bandit in by_seed.items():
        for a, cov in bandit["coverage"].items():
            label = f"{a} (seed {seed})" if seed else a
            cells = [f"{f:.3f}" for f in cov["fractions"]]  # the 5% line needs the third digit
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {cov['all_covered']} |")
    return lines


def verdict(results: dict[str, Any]) -> list[str]:
    """Goal lines: OFQL ≥ DQL per dataset, latency and step-time ratios."""
    lines = []
    timing = results.get("timing") or {"act_ms": {}, "step_ms": {}}
    act, step = timing["act_ms"], timing["step_ms"]
    if "ofql" in act and "dql" in act:
        # The bare chain is one sample: set it against OFQL's time only where OFQL draws one too.
        bare = (
            f"; bare 5-step chain ÷ OFQL: {act['dql_chain'] / act['ofql']:.1f}×"
            if timing["candidates"].get("ofql", 1) == 1
            else ""
        )
        lines.append(
            f"- Action latency DQL ÷ OFQL: **{act['dql'] / act['ofql']:.1f}×** (goal ≥ "
            f"{LATENCY_GOAL:g}){bare}."
        )
        lines.append(
            f"- Training-iteration time DQL ÷ OFQL: **{step['dql'] / step['ofql']:.2f}×**."
        )
    for spec_name, row in results["returns"].items():
        if "ofql" in row and "dql" in row:
            o, d = row["ofql"]["mean_return"], row["dql"]["mean_return"]
            mark = "met" if o >= d else "not met"
            lines.append(
                f"- {spec_name}: OFQL {o:.1f} vs DQL {d:.1f} return (goal OFQL ≥ DQL: {mark})."
            )
    return lines


def gates(results: dict[str, Any]) -> list[str]:
    """Smoke-gate failures (empty: all pass)."""
    failures = []
    act = results["timing"]["act_ms"]
    if act["dql"] / act["ofql"] < LATENCY_GOAL:
        failures.append(
            f"action latency DQL ÷ OFQL {act['dql'] / act['ofql']:.1f} < {LATENCY_GOAL}"
        )
    for a, cov in (results.get("bandit") or {}).get("coverage", {}).items():
        if not cov["all_covered"]:
            failures.append(f"{a} misses a bandit mode: {cov['fractions']}")
    for spec_name, row in results["returns"].items():
        for a in results["agents"]:
            if not all(math.isfinite(r) for r in row[a]["returns"]):
                failures.append(f"{a} on {spec_name}: non-finite return")
    return failures

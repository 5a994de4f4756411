"""Several seeds in one ``onestep-rl bench`` run: the across-seed summary of each dataset.

With ``--seeds 0,1,2`` every seed collects its own data (its own behaviour SAC), and trains and
evaluates every agent on it; each ``(dataset, seed)`` is one row of the bench's tables. This
module folds those rows into one line per dataset and agent: the mean over seeds of each seed's
pooled mean return, its standard deviation over seeds, and for OFQL against DQL the paired
difference (same data and evaluation episodes within a seed) with its standard error and the
number of seeds where OFQL ≥ DQL. At CPU budgets one seed decides little: the goal is judged on
the across-seed mean.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["parse_seeds", "run_label", "seed_summary", "seed_summary_lines"]


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` (inclusive) → distinct seeds in the given order."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            span = range(int(lo), int(hi) + 1) if sep else [int(lo)]
            seeds += [s for s in span if s not in seeds]
    except ValueError:
        raise ValueError(f"seeds are integers, 'a,b,c' or 'a-b', got {text!r}") from None
    if not seeds:
        raise ValueError(f"no seed in {text!r}")
    if min(seeds) < 0:
        raise ValueError(f"seeds are >= 0, got {text!r}")
    return seeds


def run_label(dataset: str, seed: int, seeds: Sequence[int]) -> str:
    """A row's name: the dataset alone for a one-seed run, else ``"{dataset} s{seed}"``."""
    return dataset if len(seeds) == 1 else f"{dataset} s{seed}"


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def seed_summary(returns: dict[str, Any], agents: Sequence[str]) -> dict[str, Any]:
    """Per dataset: each agent's mean / std over seeds of its per-seed mean return.

    Raw and normalised; where OFQL and DQL both ran, also the paired OFQL − DQL difference.

    Args:
        returns: the bench's rows, each with ``dataset``, ``seed`` and one entry per agent
            holding ``mean_return`` and ``normalized_mean`` (None without a reference).
        agents: the agents to summarise.
    """
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for row in returns.values():
        by_dataset.setdefault(row["dataset"], []).append(row)
    summary: dict[str, Any] = {}
    for dataset, rows in by_dataset.items():
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in rows]}
        for a in agents:
            raw = [r[a]["mean_return"] for r in rows]
            norm = [r[a]["normalized_mean"] for r in rows]
            have_norm = all(n is not None for n in norm)
            entry[a] = {
                "per_seed": raw,
                "mean_return": statistics.fmean(raw),
                "std_return": _spread(raw),
                "normalized_mean": statistics.fmean(norm) if have_norm else None,
                "normalized_std": _spread(norm) if have_norm else None,
            }
        if "ofql" in agents and "dql" in agents:
            diff = [r["ofql"]["mean_return"] - r["dql"]["mean_return"] for r in rows]
            entry["ofql_minus_dql"] = {
                "mean": statistics.fmean(diff),
                "stderr": _spread(diff) / len(diff) ** 0.5,
                "ofql_at_least_dql": sum(d >= 0 for d in diff),
                "seeds": len(diff),
            }
        summary[dataset] = entry
    return summary


def seed_summary_lines(summary: dict[str, Any], agents: Sequence[str]) -> list[str]:
    """Markdown: the across-seed table and, per dataset, the OFQL ≥ DQL verdict on the means."""
    lines = [
        "### Across seeds: mean ± std over seeds of each seed's pooled mean return",
        "",
        "| dataset | seeds | "
        + " | ".join([f"{a} return" for a in agents] + [f"{a} normalised" for a in agents])
        + " |",
        "|---|---|" + "---|" * (2 * len(agents)),
    ]
    for dataset, entry in summary.items():
        raw = [f"{entry[a]['mean_return']:.1f} ± {entry[a]['std_return']:.1f}" for a in agents]
        norm = [
            "n/a"
            if entry[a]["normalized_mean"] is None
            else f"{entry[a]['normalized_mean']:.1f} ± {entry[a]['normalized_std']:.1f}"
            for a in agents
        ]
        seeds = ", ".join(map(str, entry["seeds"]))
        lines.append(f"| {dataset} | {seeds} | " + " | ".join(raw + norm) + " |")
    lines.append("")
    for dataset, entry in summary.items():
        d = entry.get("ofql_minus_dql")
        if d is None:
            continue
        mark = "met" if d["mean"] >= 0 else "not met"
        lines.append(
            f"- {dataset}, {d['seeds']} seeds: OFQL {entry['ofql']['mean_return']:.1f} vs DQL "
            f"{entry['dql']['mean_return']:.1f} mean return (goal OFQL ≥ DQL on the mean: "
            f"**{mark}**); paired OFQL − DQL {d['mean']:+.1f} ± {d['stderr']:.1f} (standard "
            f"error over seeds); OFQL ≥ DQL in {d['ofql_at_least_dql']} of {d['seeds']} seeds."
        )
    return lines

"""Markdown table of the digits trajectory part of ``onestep bench``."""

from __future__ import annotations

from onestep.core.bench.report import _f

__all__ = ["digits_traj_table"]


def digits_traj_table(d: dict) -> list[str]:
    """Method rows (one per method and NFE), the teacher's sampler, the real held-out row."""
    steps = d["budget"]["steps"]
    lines = [
        "## Digits (8x8): consistency, flow and trajectory methods vs the teacher's sampler",
        "",
        f"{d['note']} Generator updates: "
        f"{'each trainer default' if steps is None else steps}; ratio to the teacher's 4-step FD "
        "(goal < 1 at 1 and 2 NFE).",
        "",
        "| method | NFE | FD | / teacher 4-step | train s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in d["rows"]:
        lines.append(
            f"| {r['method']} | {r['nfe']} | {_f(r['fd'], '.2f')} "
            f"| {_f(r['fd_over_teacher4'], '.2f')} | {_f(r['train_s'], '.0f')} |"
        )
    t4 = next(t["fd"] for t in d["teacher"] if t["nfe"] == 4)
    for t in d["teacher"]:
        lines.append(
            f"| {t['name']} | {t['nfe']} | {_f(t['fd'], '.2f')} | {_f(t['fd'] / t4, '.2f')} | - |"
        )
    lines.append(
        f"| real held-out digits ({d['n_held_out']}) | 0 | {_f(d['held_out'], '.2f')} | "
        f"{_f(d['held_out'] / t4, '.2f')} | - |"
    )
    notes = [f"- {m}: {n}" for m, n in d["notes"].items() if n]
    if notes:
        lines += ["", *notes]
    return lines

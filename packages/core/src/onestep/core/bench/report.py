"""Write the benchmark: markdown tables, JSON and the quality-versus-step plot.

Every figure gate (:class:`Check`) is printed beside its tolerance, so a failing run says which
number regressed, by how much, and against what.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Check", "markdown", "write_json", "write_plot"]


@dataclass
class Check:
    """A figure against its tolerance: ``value <= limit`` (``op="<="``) or ``>=``.

    Attributes:
        name: what is checked, e.g. ``"gmm dmd2 energy / teacher 2-step"``.
        value: the measured figure (NaN counts as failed).
        op: ``"<="`` or ``">="``.
        limit: the tolerance.
        gate: True when failing it fails the command (smoke tolerances); False for goals.
    """

    name: str
    value: float
    op: str
    limit: float
    gate: bool = True

    @property
    def passed(self) -> bool:
        """Whether the figure is within its tolerance."""
        if not math.isfinite(self.value):
            return False
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def line(self) -> str:
        """``PASS|FAIL|goal met|goal missed: name = value (tolerance op limit)``."""
        if self.gate:
            verdict = "PASS" if self.passed else "FAIL"
        else:
            verdict = "goal met" if self.passed else "goal missed"
        return f"{verdict}: {self.name} = {self.value:.4g} (tolerance {self.op} {self.limit:.4g})"


def _f(v: Any, spec: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


def _gmm_tables(gmm: dict) -> list[str]:
    n_seeds = len(gmm["seeds"])
    lines = [
        "## 2-D mixture (8-mode ring, exact teacher)",
        "",
        f"Energy distance to {gmm['budget']['n_eval']} true samples (mean ± std over {n_seeds} "
        f"seeds); teacher: {gmm['sampler']}.",
        "",
        "| objective | NFE | energy distance | / teacher 4-step | / teacher 64-step | modes (min) "
        "| reached teacher-4 | time to teacher-4 s | latency / teacher 4-step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in gmm["rows"]:
        lines.append(
            f"| {r['objective']} | 1 | {_f(r['energy_mean'])} ± {_f(r['energy_std'])} "
            f"| {_f(r['energy_over_teacher4'], '.2f')} | {_f(r['energy_over_teacher64'], '.2f')} "
            f"| {r['modes_min']}/8 | {r['reached_teacher4']}/{n_seeds} "
            f"| {_f(r['time_to_teacher4_s'], '.1f')} | {_f(r.get('latency_vs_teacher4'), '.3f')} |"
        )
    for t in gmm["teacher"]:
        lines.append(
            f"| teacher Euler | {t['nfe']} | {_f(t['energy_mean'])} ± {_f(t['energy_std'])} "
            f"| - | - | {t['modes_min']}/8 | - | - | - |"
        )
    if gmm["unbalanced"]:
        lines += [
            "",
            "### Unbalanced ring (weights 10:1): recall of the 4 lightest modes",
            "",
            "| objective | light-mode recall | modes covered | energy distance |",
            "|---|---:|---:|---:|",
        ]
        for u in gmm["unbalanced"]:
            lines.append(
                f"| {u['objective']} | {_f(u['light_recall_mean'], '.3f')} ± "
                f"{_f(u['light_recall_std'], '.3f')} | {min(u['modes'])}-{max(u['modes'])}/8 "
                f"| {_f(u['energy_mean'])} ± {_f(u['energy_std'])} |"
            )
    return lines


def _timing_table(timing: dict) -> list[str]:
    lines = [
        "## Step cost: a DMD2 step against the sum of its passes",
        "",
        "| pass | count per step | median ms |",
        "|---|---:|---:|",
    ]
    for name, ms in timing["passes_ms"].items():
        lines.append(f"| {name} | {timing['counts'][name]} | {ms:.3f} |")
    lines += [
        f"| **sum of passes** | | {timing['sum_ms']:.3f} |",
        f"| **full step** | | {timing['step_ms']:.3f} |",
        "",
        f"Step / sum of passes: **{timing['ratio']:.3f}** (goal <= 1.15); "
        f"{timing['threads']} torch threads, batch {timing['batch_size']}.",
    ]
    return lines


def _digits_table(digits: dict) -> list[str]:
    lines = [
        "## Digits (8x8): one-step student vs the teacher's sampler",
        "",
        f"{digits['note']}",
        "",
        "| generator | NFE | FD |",
        "|---|---:|---:|",
    ]
    for r in digits["rows"]:
        lines.append(f"| {r['name']} | {r['nfe']} | {r['fd']:.3f} |")
    return lines


def markdown(result: dict, checks: Sequence[Check], command: str) -> str:
    """The whole report as markdown."""
    dm = bool({"gmm", "timing", "digits"} & result.keys())
    traj = bool({"traj", "digits-traj"} & result.keys())
    title = "the core objectives" if dm and traj else "distribution matching"
    title = title if dm else "consistency, flow and trajectory methods"
    if not dm and set(result) & {"traj", "digits-traj"} == {"digits-traj"}:
        title += " on digits"
    lines = [f"# onestep bench: {title}", "", f"Command: `{command}`", ""]
    lines.append(
        f"Machine: {result['machine']}; date {result['date']}; wall {result['wall_s']:.0f} s."
    )
    lines.append("")
    if "gmm" in result:
        lines += [*_gmm_tables(result["gmm"]), ""]
    if "timing" in result:
        lines += [*_timing_table(result["timing"]), ""]
    if "digits" in result:
        lines += [*_digits_table(result["digits"]), ""]
    if "traj" in result:
        from onestep.core.bench.report_traj import trajectory_table

        lines += [*trajectory_table(result["traj"]), ""]
    if "digits-traj" in result:
        from onestep.core.bench.report_digits_traj import digits_traj_table

        lines += [*digits_traj_table(result["digits-traj"]), ""]
    lines += ["## Checks", ""] + [f"- {c.line()}" for c in checks]
    return "\n".join(lines) + "\n"


def write_json(path: Path, result: dict, checks: Sequence[Check]) -> None:
    """``result`` plus the checks as JSON (NaN and inf become null)."""
    payload = {**result, "checks": [{**asdict(c), "passed": c.passed} for c in checks]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(payload), indent=2) + "\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def write_plot(path: Path, gmm: dict) -> None:
    """Energy distance versus training step, one line per objective, log-scale y.

    Dashed lines mark the teacher's 2-, 4- and 8-step levels (where positive, since a log axis
    cannot show the 64-step sampler's level at the noise floor).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in gmm["rows"]:
        energy = [max(e, 1e-5) for e in r["curve_energy"]]
        ax.plot(r["curve_steps"], energy, marker="o", ms=3, label=r["objective"])
    for t in gmm["teacher"]:
        if t["nfe"] in (2, 4, 8) and t["energy_mean"] > 0:
            ax.axhline(t["energy_mean"], ls="--", lw=0.8, color="gray")
            ax.annotate(f"teacher {t['nfe']}-step", (0, t["energy_mean"]), fontsize=7, color="gray")
    ax.set_yscale("log")
    ax.set_xlabel("student update")
    ax.set_ylabel("energy distance (mean over seeds)")
    ax.set_title("One-step students on the 8-mode ring")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)

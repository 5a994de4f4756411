"""Markdown table and quality-versus-NFE plot of the trajectory part of ``onestep bench``."""

from __future__ import annotations

from pathlib import Path

from onestep.core.bench.report import _f

__all__ = ["trajectory_table", "write_nfe_plot"]


def trajectory_table(traj: dict) -> list[str]:
    """The trajectory rows (one per method and NFE) above the teacher's rows."""
    n_seeds = len(traj["seeds"])
    steps = "each trainer's tuned default" if traj["steps"] is None else str(traj["steps"])
    lines = [
        "## 2-D mixture: consistency, flow and trajectory methods (8-mode ring, exact teacher)",
        "",
        f"Energy distance to {traj['n_eval']} true samples (mean ± std over {n_seeds} seeds), "
        f"same latents and references as the teacher rows; generator updates: {steps}.",
        "",
        "| method | NFE | energy distance | / teacher 4-step | / teacher 64-step | modes (min) "
        "| train s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in traj["rows"]:
        lines.append(
            f"| {r['method']} | {r['nfe']} | {_f(r['energy_mean'])} ± {_f(r['energy_std'])} "
            f"| {_f(r['energy_over_teacher4'], '.2f')} | {_f(r['energy_over_teacher64'], '.2f')} "
            f"| {r['modes_min']}/8 | {_f(r['train_s'], '.1f')} |"
        )
    for t in traj["teacher"]:
        lines.append(
            f"| teacher Euler | {t['nfe']} | {_f(t['energy_mean'])} ± {_f(t['energy_std'])} "
            f"| - | - | {t['modes_min']}/8 | - |"
        )
    notes = [f"- {m}: {n}" for m, n in traj["notes"].items() if n]
    if notes:
        lines += ["", *notes]
    return lines


def write_nfe_plot(path: Path, traj: dict, gmm: dict | None = None) -> None:
    """Energy distance versus NFE: one line per method, the teacher's sampler, DM points at 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    floor = 1e-4  # log axis: values at the noise floor (<= 0) are drawn here
    teacher = traj["teacher"]
    ax.plot(
        [t["nfe"] for t in teacher],
        [max(t["energy_mean"], floor) for t in teacher],
        "k--",
        marker="s",
        ms=4,
        label="teacher Euler",
    )
    methods = dict.fromkeys(r["method"] for r in traj["rows"])
    for m in methods:
        rows = [r for r in traj["rows"] if r["method"] == m]
        ax.plot(
            [r["nfe"] for r in rows],
            [max(r["energy_mean"], floor) for r in rows],
            marker="o",
            ms=4,
            label=m,
        )
    if gmm is not None:
        for r in gmm["rows"]:
            ax.plot([1], [max(r["energy_mean"], floor)], marker="x", ls="", label=r["objective"])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel("energy distance (mean over seeds; <= 1e-4 drawn at 1e-4)")
    ax.set_title("Quality versus NFE on the 8-mode ring")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)

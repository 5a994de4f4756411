"""The trajectory family on the 2-D ring: every method at 1 and 2 NFE against the teacher's sampler.

Each method's trainer (``bench/traj_<family>.py``) returns a :class:`~.traj_common.TrajResult`
whose ``generate(eps, nfe)`` is scored on the seed's fixed evaluation latents and true samples
(:func:`~onestep.core.bench.gmm.eval_set`, the same sets the distribution-matching part uses):
energy distance and modes covered at each NFE. The exact teacher's Euler sampler is scored at 1, 2,
4, 8 and 64 NFE on the same latents, so a row's ratio to the teacher's 4-step level compares like
with like; the goal of issue #4 is a ratio below 1 at both 1 and 2 NFE.
"""

from __future__ import annotations

import importlib
import statistics
from collections.abc import Callable, Sequence

import torch

from onestep.core.bench.gmm import _mean_std, _ratio, eval_set, teacher_baselines
from onestep.core.bench.gmm_train import flush_denormals, mixture_preset
from onestep.core.bench.parallel import map_runs
from onestep.core.bench.traj_common import TrajResult
from onestep.core.metrics import energy_distance, mode_coverage

__all__ = ["TRAJ_METHODS", "TRAJ_NFES", "run_trajectory", "train_and_score", "trainer_for"]

# method -> "module:function"; the function is called as fn(method, steps=..., seed=..., log=...).
TRAJ_METHODS: dict[str, str] = {
    "cd": "traj_consistency:train_consistency",
    "ct": "traj_consistency:train_consistency",
    "tscd": "traj_consistency:train_consistency",
    "scm": "traj_scm:train_scm",
    "ctm": "traj_ctm:train_ctm",
    "meanflow": "traj_meanflow:train_meanflow",
    "reflow": "traj_flow:train_flow",
    "reflow+distill": "traj_flow:train_flow",
    "kd": "traj_flow:train_flow",
}
TRAJ_NFES: tuple[int, ...] = (1, 2)
_PKG = "onestep.core.bench."


def trainer_for(method: str) -> Callable[..., TrajResult]:
    """The trainer function of ``method`` (imported on first use)."""
    if method not in TRAJ_METHODS:
        raise ValueError(f"unknown trajectory method {method!r}; use one of {sorted(TRAJ_METHODS)}")
    module, _, fn = TRAJ_METHODS[method].partition(":")
    return getattr(importlib.import_module(_PKG + module), fn)


@torch.no_grad()
def _score(result: TrajResult, z: torch.Tensor, reference: torch.Tensor, nfes: Sequence[int]):
    mixture = mixture_preset("ring")
    out = {}
    for n in nfes:
        with flush_denormals():
            x = result.generate(z, n)
        out[n] = {
            "energy": energy_distance(x, reference),
            "modes": mode_coverage(x, mixture).covered,
        }
    return out


def _row(method: str, nfe: int, runs: list[dict], teachers: list[dict], train_s: float) -> dict:
    energy = [r[nfe]["energy"] for r in runs]
    e_mean, e_std = _mean_std(energy)
    t4 = statistics.fmean(tb[4]["energy"] for tb in teachers)
    t64 = statistics.fmean(tb[64]["energy"] for tb in teachers)
    return {
        "method": method,
        "nfe": nfe,
        "energy": energy,
        "energy_mean": e_mean,
        "energy_std": e_std,
        "energy_over_teacher4": _ratio(e_mean, t4),
        "energy_over_teacher64": _ratio(e_mean, t64),
        "modes": [int(r[nfe]["modes"]) for r in runs],
        "modes_min": min(int(r[nfe]["modes"]) for r in runs),
        "train_s": train_s,
    }


def train_and_score(
    method: str,
    steps: int | None,
    seed: int,
    z: torch.Tensor,
    reference: torch.Tensor,
    nfes: Sequence[int],
) -> tuple[dict, float, int, str]:
    """Train ``method`` on ``seed`` and score it; ``(scores, train_s, steps, notes)``.

    Module-level and returning plain data, so it can run in a worker process.
    """
    result = trainer_for(method)(method, steps=steps, seed=seed, log=None)
    return _score(result, z, reference, nfes), result.train_s, result.steps, result.notes


def run_trajectory(
    methods: Sequence[str],
    seeds: Sequence[int] = (0, 1, 2),
    steps: int | None = None,
    n_eval: int = 4000,
    nfes: Sequence[int] = TRAJ_NFES,
    log: Callable[[str], None] = print,
    jobs: int = 1,
) -> dict:
    """Train every method on every seed and score it at each NFE; JSON-ready dict.

    Args:
        methods: keys of :data:`TRAJ_METHODS`.
        seeds: training seeds (each with its own evaluation set).
        steps: generator updates per run; ``None`` uses each trainer's tuned default.
        n_eval: samples per evaluation, for methods and teacher alike.
        nfes: network evaluations to score each method at.
        log: progress output.
        jobs: runs trained at once, each in its own single-threaded process.
    """
    mixture = mixture_preset("ring")
    sets = [eval_set(mixture, n_eval, s) for s in seeds]
    teachers = [teacher_baselines(mixture, z, ref) for z, ref in sets]
    rows, notes = [], {}
    log(f"trajectory: {len(methods)} methods x {len(seeds)} seeds at NFE {list(nfes)}")
    calls = [
        (method, steps, seed, z, ref, tuple(nfes))
        for method in methods
        for seed, (z, ref) in zip(seeds, sets, strict=True)
    ]
    by_method: dict[str, list[tuple[dict, float]]] = {}
    for (method, _, seed, *_), (scores, train_s, n_steps, note) in zip(
        calls, map_runs(train_and_score, calls, jobs), strict=True
    ):
        by_method.setdefault(method, []).append((scores, train_s))
        notes[method] = note
        log(
            f"  {method} seed {seed}: "
            + ", ".join(f"{n} NFE {scores[n]['energy']:.4f} ({scores[n]['modes']}/8)" for n in nfes)
            + f", {train_s:.1f} s, {n_steps} steps"
        )
    for method, results in by_method.items():
        runs = [scores for scores, _ in results]
        train_s = statistics.fmean(t for _, t in results)
        rows += [_row(method, n, runs, teachers, train_s) for n in nfes]
    teacher_rows = [
        {
            "nfe": n,
            "energy_mean": _mean_std([tb[n]["energy"] for tb in teachers])[0],
            "energy_std": _mean_std([tb[n]["energy"] for tb in teachers])[1],
            "modes_min": min(int(tb[n]["modes"]) for tb in teachers),
        }
        for n in sorted(teachers[0])
    ]
    return {
        "seeds": list(seeds),
        "n_eval": n_eval,
        "nfes": list(nfes),
        "rows": rows,
        "teacher": teacher_rows,
        "notes": notes,
        "steps": steps,
    }

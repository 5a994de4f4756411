"""Digits part of the trajectory family: few-step students of the digits teacher at 1 and 2 NFE.

Same cached teacher, classifier, fixed latents and reference features as the DMD2 digits part
(:func:`~.digits_setup.load_digits_setup`). Each method's trainer
(``bench/digits_traj_<family>.py``) returns a
:class:`~onestep.core.bench.traj_common.TrajResult`; its ``generate(z, nfe)`` is scored by
Frechet distance (FD) in the classifier's features at each NFE, beside the teacher's own sampler
at 1, 2, 4, 8 and 50 NFE on the same latents. The goal of issue #4: FD below the teacher's 4-step
FD at both 1 and 2 NFE (ratio < 1). One seed, as in the DMD2 digits part.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from onestep.core.bench.digits_setup import DigitsSetup, load_digits_setup
from onestep.core.bench.digits_train import DigitsContext
from onestep.core.bench.traj_common import TrajResult
from onestep.core.sampling import nfe as solver_nfe
from onestep.core.sampling import sample

__all__ = [
    "DIGITS_TRAJ_METHODS",
    "DIGITS_TRAJ_NFES",
    "SMOKE_DIGITS_TRAJ",
    "DigitsTrajBudget",
    "run_digits_traj",
]

# method -> "module:function", called as fn(method, ctx); in the priority order.
DIGITS_TRAJ_METHODS: dict[str, str] = {
    "kd": "digits_traj_flow:train_digits_flow",
    "reflow": "digits_traj_flow:train_digits_flow",
    "reflow+distill": "digits_traj_flow:train_digits_flow",
    "cd": "digits_traj_consistency:train_digits_consistency",
    "ctm": "digits_traj_twotime:train_digits_ctm",
    "meanflow": "digits_traj_twotime:train_digits_meanflow",
    "scm": "digits_traj_scm:train_digits_scm",
    "ct": "digits_traj_consistency:train_digits_consistency",
}
DIGITS_TRAJ_NFES: tuple[int, ...] = (1, 2)
TEACHER_NFES: tuple[int, ...] = (1, 2, 4, 8, 50)
SOLVER = "dpm++2m"  # the teacher's sampler (1 step: Euler = DDIM), as in the DMD2 digits part
_PKG = "onestep.core.bench."


@dataclass(frozen=True)
class DigitsTrajBudget:
    """Sizes of the digits trajectory part (teacher and classifier as ``onestep demo``'s).

    Args:
        teacher_steps: teacher training iterations (cached by config).
        classifier_steps: classifier training iterations (cached by config).
        batch_size: the teacher's training batch (part of its cache key).
        n_eval: samples per FD row.
        steps: generator updates per method; ``None`` uses each trainer's tuned default.
        pairs: teacher ODE solves shared by KD, reflow and CTM.
        pair_steps: DPM-Solver++(2M) steps of those solves.
        seed: seed of every phase.
    """

    teacher_steps: int = 4000
    classifier_steps: int = 800
    batch_size: int = 128
    n_eval: int = 2000
    steps: int | None = None
    pairs: int = 16384
    pair_steps: int = 32
    seed: int = 0


# Seconds, not a measurement: a tiny teacher and classifier (as the smoke DMD2 digits budget),
# 5 updates per method; for tests and `onestep bench --smoke --only digits-traj`.
SMOKE_DIGITS_TRAJ = DigitsTrajBudget(
    teacher_steps=300,
    classifier_steps=100,
    batch_size=64,
    n_eval=256,
    steps=5,
    pairs=256,
    pair_steps=8,
)


def trainer_for(method: str) -> Callable[[str, DigitsContext], TrajResult]:
    """The digits trainer of ``method`` (imported on first use)."""
    if method not in DIGITS_TRAJ_METHODS:
        raise ValueError(
            f"unknown digits trajectory method {method!r}; use one of {list(DIGITS_TRAJ_METHODS)}"
        )
    module, _, fn = DIGITS_TRAJ_METHODS[method].partition(":")
    return getattr(importlib.import_module(_PKG + module), fn)


def teacher_rows(setup: DigitsSetup, nfes: Sequence[int] = TEACHER_NFES) -> list[dict]:
    """FD of the teacher's own sampler (:data:`SOLVER`; Euler for one step) at each NFE."""
    rows = []
    with torch.no_grad():
        for n in nfes:
            solver = SOLVER if n > 1 else "euler"
            if solver_nfe(solver, n) != n:
                raise ValueError(f"{solver} with {n} steps is not {n} NFE")
            fd = setup.fd(sample(setup.teacher, setup.z, n, solver=solver))
            rows.append({"name": f"teacher {n}-step ({solver})", "nfe": n, "fd": fd})
    return rows


def run_digits_traj(
    budget: DigitsTrajBudget,
    methods: Sequence[str] = tuple(DIGITS_TRAJ_METHODS),
    nfes: Sequence[int] = DIGITS_TRAJ_NFES,
    log: Callable[[str], None] = print,
) -> dict:
    """Train every method on the digits teacher and score it by FD at each NFE.

    Returns:
        JSON-ready dict: ``rows`` (method, nfe, fd, fd_over_teacher4, train_s, steps),
        ``teacher`` (name, nfe, fd), ``held_out`` (FD of the real validation digits),
        ``notes`` per method, ``budget`` and ``note``.
    """
    setup = load_digits_setup(
        budget.teacher_steps,
        budget.classifier_steps,
        budget.batch_size,
        budget.n_eval,
        budget.seed,
        log,
    )
    teacher = teacher_rows(setup)
    t4 = next(r["fd"] for r in teacher if r["nfe"] == 4)
    ctx = DigitsContext(
        setup.teacher,
        setup.x_train,
        seed=budget.seed,
        steps=budget.steps,
        pairs=budget.pairs,
        pair_steps=budget.pair_steps,
    )
    rows, notes = [], {}
    log(f"digits-traj: {len(methods)} methods at NFE {list(nfes)}; teacher 4-step FD {t4:.2f}")
    for method in methods:
        start = time.perf_counter()
        result = trainer_for(method)(method, ctx)
        fds = {n: setup.fd(result.generate(setup.z, n)) for n in nfes}
        notes[method] = result.notes
        for n in nfes:
            rows.append(
                {
                    "method": method,
                    "nfe": n,
                    "fd": fds[n],
                    "fd_over_teacher4": fds[n] / t4,
                    "train_s": result.train_s,
                    "steps": result.steps,
                }
            )
        log(
            f"  {method}: "
            + ", ".join(f"{n} NFE FD {fds[n]:.2f} ({fds[n] / t4:.2f}x)" for n in nfes)
            + f"; train {result.train_s:.0f} s, {result.steps} steps, "
            f"{time.perf_counter() - start:.0f} s with evaluation"
        )
    note = (
        f"FD in the 64-d penultimate features of the demo's DigitsClassifier against the "
        f"{setup.x_train.shape[0]} training digits; {budget.n_eval} samples per row, the same "
        f"fixed latents for every row; seed {budget.seed}; teacher solver {SOLVER} "
        f"(1 step: Euler)."
    )
    return {
        "rows": rows,
        "teacher": teacher,
        "held_out": setup.fd(setup.held_out),
        "n_held_out": int(setup.held_out.shape[0]),
        "nfes": list(nfes),
        "notes": notes,
        "budget": asdict(budget),
        "note": note,
    }

"""Digits part of the benchmark: the demo's DMD2 student against the teacher's own samplers.

Reuses :mod:`onestep.core.demo`: the cached rectified-flow teacher, the cached classifier whose
64-d penultimate layer gives the Frechet distance (FD), and the demo's DMD2 loop, all loaded by
:func:`~.digits_setup.load_digits_setup`. Every generator draws from the same fixed latents; FD
is measured against the training split's features, as in ``onestep demo``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from onestep.core.bench.digits_setup import load_digits_setup
from onestep.core.demo import evaluate
from onestep.core.demo.dmd2 import DMD2Config, distill

__all__ = ["DigitsBudget", "run_digits"]

SOLVER = "dpm++2m"


@dataclass(frozen=True)
class DigitsBudget:
    """Sizes of the digits part (the defaults are ``onestep demo``'s, so its cache is shared).

    Args:
        teacher_steps: teacher training iterations (cached by config).
        classifier_steps: classifier training iterations (cached by config).
        student_steps: DMD2 student updates.
        fake_steps: fake-score updates per student update.
        batch_size: batch of every training phase.
        n_eval: samples per FD row.
        seed: seed of every phase.
    """

    teacher_steps: int = 4000
    classifier_steps: int = 800
    student_steps: int = 3000
    fake_steps: int = 5
    batch_size: int = 128
    n_eval: int = 2000
    seed: int = 0


def run_digits(budget: DigitsBudget, log: Callable[[str], None] = print) -> dict:
    """Distill the digits teacher with DMD2 and score student and teacher samplers by FD.

    Returns:
        JSON-ready dict: ``rows`` (name, nfe, fd), ``distill_s`` and the budget.
    """
    setup = load_digits_setup(
        budget.teacher_steps,
        budget.classifier_steps,
        budget.batch_size,
        budget.n_eval,
        budget.seed,
        log,
    )
    teacher = setup.teacher
    d_cfg = DMD2Config(
        steps=budget.student_steps,
        fake_steps=budget.fake_steps,
        batch_size=budget.batch_size,
        seed=budget.seed,
    )
    start = time.perf_counter()
    student, _ = distill(teacher, d_cfg, progress=False)
    distill_s = time.perf_counter() - start
    log(f"  digits: DMD2 {d_cfg.steps} steps in {distill_s:.1f} s")

    rows = []
    with torch.no_grad():
        for g in evaluate.generators(teacher, student, SOLVER, teacher_steps=(50, 4, 2, 1)):
            rows.append({"name": g.name, "nfe": g.nfe, "fd": setup.fd(g.fn(setup.z))})
    held_out = setup.held_out
    rows.append({"name": "real held-out digits", "nfe": 0, "fd": setup.fd(held_out)})
    note = (
        f"FD in the 64-d penultimate features of the demo's DigitsClassifier against the "
        f"{setup.x_train.shape[0]} training digits; {budget.n_eval} samples per generator row "
        f"(held-out row: {held_out.shape[0]} images); teacher solver {SOLVER}."
    )
    return {"rows": rows, "distill_s": distill_s, "budget": asdict(budget), "note": note}


def fd_of(rows: list[dict], prefix: str) -> float:
    """The FD of the first row whose name starts with ``prefix``."""
    for r in rows:
        if r["name"].startswith(prefix):
            return float(r["fd"])
    raise KeyError(f"no digits row named {prefix!r}...; have {[r['name'] for r in rows]}")

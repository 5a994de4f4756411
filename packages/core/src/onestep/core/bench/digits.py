"""Digits part of the benchmark: the demo's DMD2 student against the teacher's own samplers.

Reuses :mod:`onestep.core.demo`: the cached rectified-flow teacher, the cached classifier whose
64-d penultimate layer gives the Frechet distance (FD), and the demo's DMD2 loop. Every
generator draws from the same fixed latents; FD is measured against the training split's
features, as in ``onestep demo``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from onestep.core.data.digits import load_digits_tensor
from onestep.core.demo import evaluate
from onestep.core.demo.classifier import ClassifierConfig, load_or_train_classifier
from onestep.core.demo.dmd2 import DMD2Config, distill
from onestep.core.demo.teacher import TeacherConfig, load_or_train_teacher

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
    split = {"val_fraction": 0.2, "seed": budget.seed}
    x_train, y_train = load_digits_tensor(split="train", **split)
    c_cfg = ClassifierConfig(steps=budget.classifier_steps, seed=budget.seed)
    classifier, _ = load_or_train_classifier(c_cfg, x_train, y_train, progress=False, log=log)
    t_cfg = TeacherConfig(
        steps=budget.teacher_steps, batch_size=budget.batch_size, seed=budget.seed
    )
    teacher, _ = load_or_train_teacher(t_cfg, x_train, progress=False, log=log)
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

    ref = classifier.features(x_train)
    gen = torch.Generator().manual_seed(budget.seed + 1)
    z = torch.randn((budget.n_eval, *x_train.shape[1:]), generator=gen)
    rows = []
    with torch.no_grad():
        for g in evaluate.generators(teacher, student, SOLVER, teacher_steps=(50, 4, 2, 1)):
            fd = evaluate.fd(classifier.features, g.fn(z), ref)
            rows.append({"name": g.name, "nfe": g.nfe, "fd": fd})
    held_out = load_digits_tensor(split="val", **split)[0]
    rows.append(
        {
            "name": "real held-out digits",
            "nfe": 0,
            "fd": evaluate.fd(classifier.features, held_out, ref),
        }
    )
    note = (
        f"FD in the 64-d penultimate features of the demo's DigitsClassifier against the "
        f"{x_train.shape[0]} training digits; {budget.n_eval} samples per generator row "
        f"(held-out row: {held_out.shape[0]} images); teacher solver {SOLVER}."
    )
    return {"rows": rows, "distill_s": distill_s, "budget": asdict(budget), "note": note}


def fd_of(rows: list[dict], prefix: str) -> float:
    """The FD of the first row whose name starts with ``prefix``."""
    for r in rows:
        if r["name"].startswith(prefix):
            return float(r["fd"])
    raise KeyError(f"no digits row named {prefix!r}...; have {[r['name'] for r in rows]}")

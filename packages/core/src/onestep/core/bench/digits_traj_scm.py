"""Digits trainer of sCD: continuous-time consistency distillation in TrigFlow (Lu & Song 2024).

The student is :class:`~onestep.core.methods.scm_jvp.TrigFlowStudent` around
:class:`~onestep.core.bench.digits_nets.TrigFlowFromFlow`, the rectified-flow teacher's weights
re-expressed exactly as TrigFlow's ``F`` (sCD starts from the teacher, sec. 4), with
``c_noise = tau``. The teacher's PF-ODE velocity ``dx/dtau = sigma_d F_teacher`` comes from the
same conversion of the frozen teacher, with no ``1 / sin(tau)``.

One update (Alg. 1): training digits noised at ``tau`` from the log-normal proposal
(:func:`~onestep.core.objectives.scm.proposal_angle`); ``F-`` and ``dF-/dtau`` by one
``torch.func.jvp`` (:func:`~onestep.core.methods.scm_jvp.trigflow_jvp`); tangent warm-up and
normalisation; :func:`~onestep.core.objectives.scm.scm_loss` with the adaptive log-weight
(:class:`~onestep.core.methods.scm.AdaptiveWeight`). ``generate(eps, nfe)``: consistency
sampling from the EMA student at ``tau = pi/2`` (2 steps: then ``1.1``, the paper's middle angle).

Measured (seed 0): the default 1500 updates reach FD 80 / 56 at 1 / 2 NFE (teacher 4-step: 82).
Training longer does not help at this learning rate (3000 updates: 98 / 71); lr 2e-4 diverged
(397 / 543) and a 1500-update tangent warm-up was worse (124 / 93): the JVP through the teacher's
time embedding of ``1000 t`` (sCM, sec. 4.1, uses ``c_noise = t`` for stability) limits it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from onestep.core.bench.digits_nets import FlowVelocity, TrigFlowFromFlow
from onestep.core.bench.digits_train import DigitsContext, clone_teacher, fit
from onestep.core.bench.traj_common import TrajResult
from onestep.core.methods.consistency_function import consistency_sample
from onestep.core.methods.scm import AdaptiveWeight
from onestep.core.methods.scm_jvp import TrigFlowStudent, trigflow_jvp
from onestep.core.objectives.scm import (
    normalize_tangent,
    proposal_angle,
    scm_loss,
    scm_tangent,
    tangent_warmup,
)

__all__ = ["ANGLES", "DigitsSCMConfig", "train_digits_scm"]

# Sampling angles by NFE (Lu & Song 2024, sec. 5: 2 steps at pi/2 and 1.1).
ANGLES: dict[int, tuple[float, ...]] = {1: (math.pi / 2,), 2: (math.pi / 2, 1.1)}


@dataclass(frozen=True)
class DigitsSCMConfig:
    """Hyperparameters of one sCD run on the digits.

    Args:
        steps: student updates.
        batch_size: digits per update.
        lr: Adam learning rate (cosine-decayed to ``lr_floor * lr``).
        lr_floor: final learning-rate factor.
        p_mean: mean of ``log sigma`` of the time proposal (sCD: -0.8).
        p_std: its std (sCD: 1.6).
        warmup_steps: tangent warm-up updates.
        tangent_c: tangent normalisation constant.
        ema: EMA decay of the evaluated student.
        sigma_d: TrigFlow's data standard deviation.
    """

    steps: int = 1500
    batch_size: int = 256
    lr: float = 1e-4
    lr_floor: float = 0.05
    p_mean: float = -0.8
    p_std: float = 1.6
    warmup_steps: int = 500
    tangent_c: float = 0.1
    ema: float = 0.999
    sigma_d: float = 0.5


def train_digits_scm(
    method: str, ctx: DigitsContext, config: DigitsSCMConfig | None = None
) -> TrajResult:
    """Distil the digits teacher by sCD (module docstring); ``ctx.steps`` overrides updates."""
    if method != "scm":
        raise ValueError(f"unknown digits sCM method {method!r}; use 'scm'")
    cfg = config or DigitsSCMConfig()
    if ctx.steps is not None:
        cfg = replace(cfg, steps=ctx.steps)
    start = time.perf_counter()
    sd = cfg.sigma_d
    teacher_F = TrigFlowFromFlow(FlowVelocity(ctx.teacher), sd)
    student = TrigFlowStudent(TrigFlowFromFlow(FlowVelocity(clone_teacher(ctx.teacher)), sd), sd)
    weight = AdaptiveWeight(seed=ctx.seed)
    gen = torch.Generator().manual_seed(ctx.seed + 5)
    data = ctx.x_train

    def loss(step: int) -> Tensor:
        x0 = data[torch.randint(0, data.shape[0], (cfg.batch_size,), generator=gen)]
        eps = torch.randn(x0.shape, generator=gen)
        log_sigma = cfg.p_mean + cfg.p_std * torch.randn(cfg.batch_size, generator=gen)
        tau = proposal_angle(log_sigma, sd).clamp(1e-3, math.pi / 2)
        c, s = torch.cos(tau).view(-1, 1, 1, 1), torch.sin(tau).view(-1, 1, 1, 1)
        x_t = c * x0 + s * sd * eps
        with torch.no_grad():
            dxdt = sd * teacher_F(x_t / sd, tau)  # the teacher's dx/dtau (sCM, sec. 3)
            F_minus, dF = trigflow_jvp(student.F, x_t, tau, dxdt, force_math=False)
            r = tangent_warmup(step, cfg.warmup_steps)
            g = normalize_tangent(scm_tangent(x_t, dxdt, F_minus, dF, tau, sd, r), cfg.tangent_c)
        return scm_loss(student.F(x_t, tau), F_minus, g, weight(tau)).mean()

    ema = fit(
        student,
        loss,
        cfg.steps,
        cfg.lr,
        ema=cfg.ema,
        lr_floor=cfg.lr_floor,
        extra=list(weight.parameters()),
        log=ctx.log,
    )

    @torch.no_grad()
    def generate(eps: Tensor, nfe: int) -> Tensor:
        if nfe not in ANGLES:
            raise ValueError(f"sCD sampling supports nfe in {sorted(ANGLES)}, got {nfe}")
        times = [a / (math.pi / 2) for a in ANGLES[nfe]]
        return consistency_sample(ema, eps, times, generator=torch.Generator().manual_seed(1234))

    notes = (
        f"sCD (TrigFlow, sigma_d {sd}) from the teacher's weights, exact flow-to-TrigFlow "
        f"conversion; tangent warm-up {cfg.warmup_steps}; EMA {cfg.ema}; 2 NFE: pi/2, 1.1"
    )
    return TrajResult(method, ctx.seed, generate, time.perf_counter() - start, cfg.steps, notes)

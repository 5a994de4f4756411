"""2-D benchmark trainer for sCM: continuous-time consistency distillation (sCD) in TrigFlow.

Teacher: the exact ring denoiser under :func:`~onestep.core.noise.trig` (``sigma_d = 0.5``), whose
PF-ODE velocity ``dx/dtau = (cos(tau) x_t - x0_hat) / sin(tau)`` is exact. Student: a TinyMLP as
``F_theta`` in :class:`~onestep.core.methods.scm_jvp.TrigFlowStudent`. One update (Lu & Song 2024,
Alg. 1): real ring samples noised at ``tau`` from the log-normal proposal, ``dF-/dtau`` by
``torch.func.jvp``, tangent warm-up and normalisation, adaptive weighting. A plain PyTorch loop:
with networks this small a framework's per-step overhead would dominate. The EMA student samples.

Sampling (sec. 5): ``x = f(sigma_d eps, pi/2)``; with more steps, re-noise to the next angle of
``taus`` (2 steps: ``pi/2, 1.1``, the paper's choice) with fixed-seed noise and apply ``f`` again.

What mattered on this benchmark (seed 0, energy distance / the teacher's 4-step Euler, at 1 and 2
NFE; one run each, on a busy 2-core machine):

* the time input's scale: ``F`` is differentiated along the trajectory, so it must be smooth in
  ``tau``. ``c_noise = tau`` (TinyMLP frequencies up to 1000): 232x / 310x; ``0.01 tau``: 9.6x /
  9.0x (the earlier default); ``0.001 tau``: 4.0x / 3.3x, 8/8 modes;
* tangent normalisation constant 0.03 instead of the paper's 0.1 (a 2-D tangent's norm is small
  next to an image's): 3.7x / 2.7x;
* a better start (the paper starts from the teacher's weights; here ``F`` is first fitted to the
  exact velocity): 4,000 fitting updates 2.4x / 1.8x, 8,000 (with width 256 and 6,000 sCD updates)
  1.17x / 0.57x; seed 1: 1.65x / 0.90x;
* the last step, the tangent's weighting: the paper's ``g = cos(tau) df-/dtau`` vanishes at the
  1-step angle ``pi/2``, so the 1-step map was reached only by continuity from smaller angles.
  ``g = df-/dtau`` (``cos_power = 0``, same fixed point ``df/dtau = 0``, a departure from the
  paper) gives 0.53x / 0.21x; ``cos(tau)^0.5``: 0.53x / 0.24x. That is the default here.

Tried without a gain: sigma_d 1.0 / 1.4, a 3-layer MLP, width 512, 10,000 sCD updates, decaying
the fitting's learning rate, a proposal centred at larger angles.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from onestep.core import noise
from onestep.core.bench.gmm_train import flush_denormals
from onestep.core.bench.schedule import cosine_to_floor
from onestep.core.bench.traj_common import TrajResult, ring_teacher
from onestep.core.data.gmm import GaussianMixture, GMMDenoiser
from onestep.core.ema import ema_update_
from onestep.core.methods.scm import AdaptiveWeight, teacher_trigflow_velocity
from onestep.core.methods.scm_jvp import TrigFlowStudent, trigflow_jvp
from onestep.core.objectives.scm import (
    normalize_tangent,
    proposal_angle,
    scm_loss,
    scm_tangent,
    tangent_warmup,
)
from onestep.core.testing import TinyMLP

__all__ = ["SCMConfig", "few_step_sampler", "train_scm"]

# Angles of the multi-step sampler, by NFE (the paper's 2-step middle angle is 1.1).
TAUS: dict[int, tuple[float, ...]] = {
    1: (math.pi / 2,),
    2: (math.pi / 2, 1.1),
    4: (math.pi / 2, 1.3, 1.1, 0.8),
}


@dataclass(frozen=True)
class SCMConfig:
    """Hyperparameters of one sCD run on the ring.

    Args:
        steps: student updates.
        batch_size: samples per update.
        hidden: width of the TinyMLP.
        lr: Adam learning rate (cosine-decayed to ``lr * lr_floor``).
        lr_floor: final fraction of the learning rate.
        p_mean: mean of ``log sigma`` of the time proposal.
        p_std: std of ``log sigma``.
        warmup_steps: tangent warm-up steps.
        tangent_c: tangent normalisation constant.
        cos_power: ``p`` of the tangent ``cos^p(tau) df-/dtau`` (paper: 1; see the module
            docstring for why 0 here).
        ema: EMA decay of the sampling network.
        sigma_d: TrigFlow data standard deviation.
        pretrain_steps: updates of ``F`` as the teacher's diffusion model first (regressing
            ``sigma_d F`` on the exact velocity ``dx/dtau``): sCD starts from the pretrained
            teacher's weights in the paper (sec. 4), which the analytic teacher does not have.
        time_scale: ``c_noise(tau) = time_scale * tau`` fed to the TinyMLP, whose time features
            have frequencies 1 to 1000: small (every feature under a quarter turn), so that ``F``
            is smooth in ``tau`` and the 1-step angle ``pi/2`` (where the tangent, hence the
            training signal, vanishes) inherits what neighbouring angles learn.
    """

    steps: int = 6000
    batch_size: int = 512
    hidden: int = 256
    lr: float = 5e-4
    lr_floor: float = 0.05
    p_mean: float = -0.4
    p_std: float = 1.6
    warmup_steps: int = 300
    tangent_c: float = 0.03
    ema: float = 0.999
    sigma_d: float = 0.5
    time_scale: float = 0.001
    pretrain_steps: int = 8000
    cos_power: float = 0.0


def few_step_sampler(student: TrigFlowStudent, noise_seed: int = 1234) -> Callable:
    """``generate(eps, nfe)``: ``nfe`` consistency steps on the angles :data:`TAUS`."""

    @torch.no_grad()
    def generate(eps: Tensor, nfe: int) -> Tensor:
        if nfe not in TAUS:
            raise ValueError(f"sCM sampler supports nfe in {sorted(TAUS)}, got {nfe}")
        gen = torch.Generator(device=eps.device).manual_seed(noise_seed)
        sigma_d, x0 = student.sigma_d, eps
        x = sigma_d * eps
        for k, tau in enumerate(TAUS[nfe]):
            angle = torch.full((eps.shape[0],), tau, dtype=eps.dtype, device=eps.device)
            if k > 0:
                z = torch.randn(eps.shape, generator=gen, device=eps.device, dtype=eps.dtype)
                x = math.cos(tau) * x0 + math.sin(tau) * sigma_d * z
            x0 = student.consistency(x, angle)
        return x0

    return generate


def _noised(
    cfg: SCMConfig, teacher: GMMDenoiser, batch: tuple[Tensor, ...]
) -> tuple[Tensor, Tensor, Tensor]:
    """``(x_t, tau, dx/dtau)`` of a batch ``(x0, eps, u)``.

    The proposal angle, the TrigFlow noising ``cos(tau) x0 + sin(tau) sigma_d eps`` and the exact
    teacher's velocity there.
    """
    x0, eps, u = batch
    tau = proposal_angle(cfg.p_mean + cfg.p_std * u, cfg.sigma_d).clamp(1e-3, math.pi / 2)
    c, s = torch.cos(tau)[:, None], torch.sin(tau)[:, None]
    x_t = c * x0 + s * cfg.sigma_d * eps
    with torch.no_grad():
        dxdt = teacher_trigflow_velocity(teacher, x_t, tau, cfg.sigma_d)
    return x_t, tau, dxdt


def _update(
    cfg: SCMConfig,
    student: TrigFlowStudent,
    weight: AdaptiveWeight,
    teacher: GMMDenoiser,
    batch: tuple[Tensor, Tensor, Tensor],
    step: int,
) -> Tensor:
    """The per-sample sCD loss of one batch ``(x0, eps, u)`` (Alg. 1)."""
    x_t, tau, dxdt = _noised(cfg, teacher, batch)
    with torch.no_grad():
        F_minus, dF = trigflow_jvp(student.F, x_t, tau, dxdt, force_math=False)
        r = tangent_warmup(step, cfg.warmup_steps)
        g = scm_tangent(x_t, dxdt, F_minus, dF, tau, cfg.sigma_d, r, cfg.cos_power)
        g = normalize_tangent(g, cfg.tangent_c)
    return scm_loss(student.F(x_t, tau), F_minus, g, weight(tau))


def _pretrain_loss(
    cfg: SCMConfig, student: TrigFlowStudent, teacher: GMMDenoiser, batch: tuple[Tensor, ...]
) -> Tensor:
    """TrigFlow diffusion loss with the exact target: ``||sigma_d F - dx/dtau||^2`` (sec. 3)."""
    x_t, tau, dxdt = _noised(cfg, teacher, batch)
    return ((cfg.sigma_d * student.F(x_t, tau) - dxdt) ** 2).mean()


def _pretrain(
    cfg: SCMConfig,
    student: TrigFlowStudent,
    teacher: GMMDenoiser,
    mixture: GaussianMixture,
    gen: torch.Generator,
) -> None:
    """Fit ``F`` to the teacher's velocity for ``cfg.pretrain_steps`` updates (own optimizer)."""
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    for _ in range(cfg.pretrain_steps):
        x0 = mixture.sample(cfg.batch_size, gen)
        eps = torch.randn(cfg.batch_size, 2, generator=gen)
        u = torch.randn(cfg.batch_size, generator=gen)
        loss = _pretrain_loss(cfg, student, teacher, (x0, eps, u))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def train_scm(
    method: str = "scm",
    *,
    steps: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    config: SCMConfig | None = None,
) -> TrajResult:
    """Distil the exact ring teacher by sCD; returns the EMA student's few-step sampler.

    Args:
        method: ``"scm"`` (the only method of this family).
        steps: student updates (``None``: the tuned default of :class:`SCMConfig`).
        seed: seed of initialisation, data, noise and times.
        log: optional progress printer.
        config: hyperparameters (``steps`` overrides its ``steps``).
    """
    if method != "scm":
        raise ValueError(f"unknown sCM benchmark method {method!r}; use 'scm'")
    cfg = config or SCMConfig()
    n_steps = cfg.steps if steps is None else steps
    mixture, teacher = ring_teacher(noise.trig(cfg.sigma_d))
    torch.manual_seed(seed)
    student = TrigFlowStudent(TinyMLP(2, cfg.hidden), cfg.sigma_d, cfg.time_scale)
    weight = AdaptiveWeight(seed=seed)
    ema = copy.deepcopy(student).requires_grad_(False)
    params = [*student.parameters(), *weight.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.99))
    sched = cosine_to_floor(opt, n_steps, cfg.lr_floor)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    with flush_denormals():
        _pretrain(cfg, student, teacher, mixture, gen)
        ema.load_state_dict(student.state_dict())
        for step in range(n_steps):
            x0 = mixture.sample(cfg.batch_size, gen)
            eps = torch.randn(cfg.batch_size, 2, generator=gen)
            u = torch.randn(cfg.batch_size, generator=gen)
            loss = _update(cfg, student, weight, teacher, (x0, eps, u), step).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ema_update_(ema, student, cfg.ema)
            if log is not None and (step % 500 == 0 or step == n_steps - 1):
                log(f"scm step {step}: loss {loss.item():.4f}")
    train_s = time.perf_counter() - start
    ema.eval()
    notes = (
        f"sCD (TrigFlow, sigma_d {cfg.sigma_d}), exact teacher velocity; F first fitted to it "
        f"({cfg.pretrain_steps} updates, in train s); EMA student"
    )
    return TrajResult("scm", seed, few_step_sampler(ema), train_s, n_steps, notes)

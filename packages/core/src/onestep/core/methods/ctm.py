"""``ConsistencyTrajectory``: CTM distillation (Kim et al. 2024) as one Lightning module.

The algorithm (CTM, Alg. 1, without the optional GAN term):

1. Draw data ``x0``, noise, times ``s < u < t``; ``x_t = alpha_t x0 + sigma_t eps``.
2. Student jump ``x_est = G_theta(x_t, t, s)``; teacher's solver ``x_u = Solver(x_t, t, u)`` and
   the EMA target's jump ``x_target = G_theta-(x_u, u, s)`` (no gradient).
3. Map both to time 0 with the stop-gradient student ``G_sg(theta)(., s, 0)`` and compare
   (soft consistency matching, eq. 7), plus ``dsm_weight`` times the DSM term (eq. 8).
4. Adam step on the student, EMA update of the target network.

The teacher is frozen here (``requires_grad_(False)``, eval mode) and never written to a
checkpoint: it is reloaded from its own source. The EMA target *is* checkpointed.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from torch import Tensor, nn

from onestep.core.denoiser import to_x0
from onestep.core.ema import ema_update_
from onestep.core.methods.builders import noise_process
from onestep.core.methods.dm_export import export_student
from onestep.core.methods.dm_health import grad_norm
from onestep.core.methods.dm_random import GlobalBatchRNG
from onestep.core.methods.frozen_state import FrozenCheckpoint
from onestep.core.noise import NoiseProcess, append_dims
from onestep.core.objectives.ctm import ctm_dsm_loss, ctm_jump, ctm_loss, ctm_mid_time
from onestep.core.sampling.step import ode_solve
from onestep.core.testing import TwoTimeMLP

__all__ = ["ConsistencyTrajectory", "TrajectoryStudent", "ctm_generate", "ctm_student_module"]

Batch = dict[str, Tensor]


class TrajectoryStudent(nn.Module):
    """CTM's ``G(x_t, t, s) = a x_t + b g(x_t, t, s)`` around a two-time network (eq. 5).

    Args:
        net: ``net(x_t, t, s, cond) -> [B, ...]``, e.g. :class:`~onestep.core.testing.TwoTimeMLP`.
        process: the noise process of ``x_t``.
        prediction: what ``net`` predicts at ``(x_t, t)``: ``x0``, ``eps``, ``v`` or ``flow``;
            it is turned into ``g`` (an ``x0`` estimate) by :func:`~onestep.core.denoiser.to_x0`.
    """

    def __init__(self, net: nn.Module, process: NoiseProcess, prediction: str = "x0"):
        super().__init__()
        self.net, self.process, self.prediction = net, process, prediction

    def g(self, x_t: Tensor, t: Tensor, s: Tensor, cond: Any = None) -> Tensor:
        """The ``x0``-like estimate ``g(x_t, t, s)``; ``g(x_t, t, t)`` is the student's denoiser."""
        out = self.net(x_t, t, s, cond) if cond is not None else self.net(x_t, t, s)
        return to_x0(out, self.prediction, x_t, t, self.process)

    def forward(self, x_t: Tensor, t: Tensor, s: Tensor, cond: Any = None) -> Tensor:
        """``G(x_t, t, s)``, the state at ``s`` (``[B]``, ``s <= t``); ``x_t`` at ``s = t``."""
        return ctm_jump(self.process, x_t, self.g(x_t, t, s, cond), t, s)


def ctm_student_module(
    dim: int = 2, process: str = "flow", prediction: str = "x0", hidden: int = 64, seed: int = 0
) -> TrajectoryStudent:
    """A tiny :class:`TrajectoryStudent` on a :class:`~onestep.core.testing.TwoTimeMLP` (for YAML).

    Args:
        dim: data dimension.
        process: noise process name (see :func:`~onestep.core.methods.builders.noise_process`).
        prediction: the network's native prediction.
        hidden: hidden width.
        seed: initialisation seed.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return TrajectoryStudent(TwoTimeMLP(dim, hidden), noise_process(process), prediction)


@torch.no_grad()
def ctm_generate(
    student: TrajectoryStudent,
    eps: Tensor,
    times: list[float],
    gamma: float = 0.0,
    generator: torch.Generator | None = None,
    cond: Any = None,
) -> Tensor:
    """CTM's gamma-sampling (Kim et al. 2024, Alg. 2): one student evaluation per jump.

    Starts from ``x = sigma_T eps`` at ``T = times[0]`` (exact for rectified flow's ``T = 1``,
    where ``alpha = 0``); each step jumps to ``s'`` with
    ``sigma_s' / alpha_s' = sqrt(1 - gamma^2) sigma_n / alpha_n`` at
    the next time ``t_n`` and re-noises back to ``t_n``. ``gamma = 0``: deterministic jumps
    along the trajectory; ``gamma = 1``: consistency-model multistep sampling.

    Args:
        student: the CTM student.
        eps: standard normal latents ``[B, ...]``.
        times: decreasing times, first the start (usually 1.0), last 0.0; NFE = ``len - 1``.
        gamma: stochasticity in [0, 1].
        generator: RNG of the re-noising.
        cond: passed to the student.
    """
    if len(times) < 2 or any(b >= a for a, b in itertools.pairwise(times)):
        raise ValueError(f"times must decrease and have >= 2 entries, got {times}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    process, b = student.process, eps.shape[0]
    x = append_dims(process.sigma(torch.full((b,), times[0])).to(eps), eps.ndim) * eps
    for t_now, t_next in itertools.pairwise(times):
        t, s = torch.full((b,), t_now).to(eps), torch.full((b,), t_next).to(eps)
        s_jump = s
        if gamma > 0 and t_next > 0:
            ratio = (process.sigma(s) / process.alpha(s)) * (1.0 - gamma**2) ** 0.5
            s_jump = process.t_from_sigma_ratio(ratio) if gamma < 1 else torch.zeros_like(s)
        x = student(x, t, s_jump, cond)
        if gamma > 0 and t_next > 0:
            a_n, sig_n = process.coefficients(s, x.ndim)
            a_j = process.coefficients(s_jump, x.ndim)[0]
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            x = (a_n / a_j) * x + gamma * sig_n * noise
    return x


class ConsistencyTrajectory(FrozenCheckpoint, L.LightningModule):
    """Distill ``teacher`` into a CTM ``student`` ``G(x_t, t, s)`` (any-time-to-any-time jumps).

    Batches carry real samples ``x0`` (``NoiseDataModule(real=GMMData())`` for the toy ring).

    Args:
        student: a :class:`TrajectoryStudent` (``G`` and ``g``, with ``process``).
        teacher: frozen Denoiser-like ``teacher(x_t, t, cond) -> x0`` with the same process.
        solver: the teacher's step solver (``euler``/``ddim`` or ``heun``; Heun needs
            ``alpha_t > 0``, so ``t_max < 1`` for rectified flow).
        solver_steps: teacher steps from ``t`` to ``u``.
        ema_decay: decay of the target network ``theta-`` (CTM: 0.999).
        metric: ``l2`` or ``pseudo_huber`` distance at time 0.
        huber_c: pseudo-Huber scale (``None``: ``0.00054 sqrt(d)``).
        dsm_weight: weight of the DSM term (0 turns it off).
        t_min: lowest start time ``t``.
        t_max: highest start time ``t`` (1.0: pure noise for rectified flow).
        s_zero_prob: fraction of the batch with ``s = 0`` (the one-step jump).
        lr: Adam learning rate.
        betas: Adam betas.
        grad_clip: clip the gradient norm to this (``None``: no clipping).
        seed: seed of the per-step draws (times, noise), reseeded by ``(seed, global_step)``
            and sliced per rank (:class:`~onestep.core.methods.dm_random.GlobalBatchRNG`).
        export_path: if set, :meth:`export_student` writes here when training ends.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        solver: str = "euler",
        solver_steps: int = 2,
        ema_decay: float = 0.999,
        metric: str = "l2",
        huber_c: float | None = None,
        dsm_weight: float = 1.0,
        t_min: float = 0.02,
        t_max: float = 1.0,
        s_zero_prob: float = 0.25,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        grad_clip: float | None = None,
        seed: int = 0,
        export_path: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["student", "teacher"])
        self.automatic_optimization = False
        if not isinstance(student, TrajectoryStudent):
            raise TypeError(
                f"student must be a TrajectoryStudent (G(x_t, t, s)), got {type(student).__name__}"
            )
        if not 0.0 <= t_min < t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got {t_min}, {t_max}")
        self.student = student
        self.target = copy.deepcopy(student).requires_grad_(False)
        # Frozen here, once: the teacher is the fixed target and never trains (no grad, eval mode).
        self.teacher = teacher.requires_grad_(False).eval()
        self.process = student.process
        self.rng = GlobalBatchRNG(seed)

    def train(self, mode: bool = True) -> ConsistencyTrajectory:
        """Switch the student to ``mode``; teacher and target stay in eval mode."""
        super().train(mode)
        self.teacher.eval()
        self.target.eval()
        return self

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        """One CTM update: soft consistency matching + DSM, then the EMA target (Alg. 1)."""
        self.rng.start(self, self.global_step)
        if "x0" not in batch:
            raise ValueError("CTM trains on data: batches need 'x0' (NoiseDataModule(real=...))")
        x0, cond = batch["x0"], batch.get("cond")
        t, s, u, eps = self.draws(x0)
        x_t = self.process.add_noise(x0, eps, t)
        ctm = self.consistency_loss(x_t, t, s, u, cond).mean()
        loss, logs = ctm, {"loss/ctm": ctm.detach()}
        if self.hparams["dsm_weight"] > 0:
            dsm = ctm_dsm_loss(self.student.g(x_t, t, t, cond), x0).mean()
            loss = loss + self.hparams["dsm_weight"] * dsm
            logs["loss/dsm"] = dsm.detach()
        opt: Any = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        logs["grad_norm/student"] = grad_norm(self.student.parameters(), self.hparams["grad_clip"])
        opt.step()
        ema_update_(self.target, self.student, self.hparams["ema_decay"])
        self.log_dict(logs | {"loss/student": loss.detach()}, prog_bar=False)

    def draws(self, x0: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The step's random draws for data ``x0`` ``[B, ...]``: times ``t, s, u``, noise ``eps``.

        All from :attr:`rng`, in this order: this rank's rows of global-batch draws.
        """
        t, s, u = self.sample_times(x0.shape[0], x0)
        return t, s, u, self.rng.randn(x0.shape, x0.device).to(x0)

    def sample_times(self, n: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``t ~ U[t_min, t_max]``, ``s ~ U[0, t)`` (0 with ``s_zero_prob``), ``u ~ U[s, t]``.

        Drawn from :attr:`rng`: this rank's rows of global-batch draws.
        """
        hp = self.hparams
        dev = like.device
        t = self.rng.uniform(n, float(hp["t_min"]), float(hp["t_max"]), dev)
        s = t * self.rng.uniform(n, 0.0, 1.0, dev)
        s = torch.where(self.rng.uniform(n, 0.0, 1.0, dev) < hp["s_zero_prob"], 0.0, s)
        u = ctm_mid_time(t, s, self.rng.uniform(n, 0.0, 1.0, dev))
        return t.to(like.dtype), s.to(like.dtype), u.to(like.dtype)

    def consistency_loss(self, x_t: Tensor, t: Tensor, s: Tensor, u: Tensor, cond: Any) -> Tensor:
        """Per-sample soft consistency matching ``[B]``, compared at time 0 (eq. 7)."""
        x_est = self.student(x_t, t, s, cond)
        with torch.no_grad():
            teacher = cast(Any, self.teacher)  # Denoiser-like: (x_t, t, cond) -> x0, .process
            x_u = ode_solve(
                teacher, x_t, t, u, self.hparams["solver_steps"], self.hparams["solver"], cond
            )
            x_target = self.target(x_u, u, s, cond)
            target_0 = self._frozen_jump_to_zero(x_target, s, cond)
        pred_0 = self._frozen_jump_to_zero(x_est, s, cond)
        self._gap = (x_est - x_target).detach().flatten(1).norm(dim=1).mean()
        return ctm_loss(pred_0, target_0, self.hparams["metric"], self.hparams["huber_c"])

    def _frozen_jump_to_zero(self, x_s: Tensor, s: Tensor, cond: Any) -> Tensor:
        """``G_sg(theta)(x_s, s, 0)``: detached student weights, gradient through ``x_s`` only."""
        params = {k: v.detach() for k, v in self.student.named_parameters()}
        zero = torch.zeros_like(s)
        return torch.func.functional_call(self.student, params, (x_s, s, zero, cond))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Log the health number: mean ``||x_est - x_target||`` before the step."""
        self.log("health/target_gap", self._gap, prog_bar=False)

    def configure_optimizers(self) -> Any:
        """Adam on the student only."""
        betas = tuple(self.hparams["betas"])
        return torch.optim.Adam(self.student.parameters(), lr=self.hparams["lr"], betas=betas)  # pyright: ignore[reportArgumentType]

    def export_student(self, path: str | Path) -> Path:
        """Write the EMA target (the network CTM samples with) as safetensors."""
        return export_student(self.target, path)

    def on_train_end(self) -> None:
        """Export to ``export_path`` (rank 0 only) when one is configured."""
        if self.hparams["export_path"] and self.trainer.is_global_zero:
            self.export_student(self.hparams["export_path"])

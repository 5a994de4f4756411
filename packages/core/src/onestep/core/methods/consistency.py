"""``ConsistencyDistillation``: one Lightning module for CD, LCM(-LoRA), CT / iCT and Hyper-SD TSCD.

One step (Song et al. 2023, Alg. 2 (CD) and Alg. 3 (CT)):

1. Draw ``x0`` (the batch's real samples), ``eps`` and a grid index ``n``; ``t_cur = t_n``,
   ``t_next = t_{n+k}`` (``k``: LCM's skipping interval).
2. ``x_next = alpha x0 + sigma eps`` at ``t_next``; ``x_cur``: one teacher ODE step back to
   ``t_cur`` (CD; optionally CFG-guided, LCM) or the same ``(x0, eps)`` at ``t_cur`` (CT).
3. Loss ``lambda d(f_theta(x_next, t_next), f_{theta^-}(x_cur, t_cur))``; with TSCD segments both
   sides are mapped (DDIM) to the lower edge of ``t_next``'s segment (Hyper-SD).
4. ``theta^- <- EMA(theta)`` (CD, CT); iCT uses ``theta^- = stopgrad(theta)`` (``ema_decay=0``).

The teacher is frozen here and only here (``requires_grad_(False)``, eval mode) and is never
written to a checkpoint; the EMA target is (it is training state).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from onestep.core import lora
from onestep.core.denoiser import Guided, with_guidance
from onestep.core.ema import ema_update_
from onestep.core.methods.consistency_function import ConsistencyFunction, consistency_sample
from onestep.core.methods.consistency_grid import ConsistencyGrid
from onestep.core.methods.dm_export import export_student
from onestep.core.methods.dm_random import GlobalBatchRNG, micro_batch_iteration
from onestep.core.methods.frozen_state import FrozenCheckpoint
from onestep.core.objectives import consistency as cm
from onestep.core.sampling.step import STEP_SOLVERS, ode_step

__all__ = ["MODES", "ConsistencyDistillation"]

MODES: tuple[str, ...] = ("cd", "ct")
Batch = dict[str, Tensor]


class _FixedScaleTeacher(nn.Module):
    """A guided teacher with this batch's per-sample CFG weights ``w`` (``[B]``) bound."""

    def __init__(self, guided: Guided, w: Tensor):
        super().__init__()
        self.guided, self.w, self.process = guided, w, guided.process

    def forward(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        return self.guided(x_t, t, cond, scale=self.w)


class ConsistencyDistillation(FrozenCheckpoint, L.LightningModule):
    """Consistency distillation (``mode="cd"``) or training (``mode="ct"``) of ``student``.

    Args:
        student: Denoiser-like ``student(x_t, t, cond) -> x0`` with a ``process``; wrapped here in
            a :class:`ConsistencyFunction`.
        teacher: frozen Denoiser-like teacher (CD); ``None`` for CT.
        mode: ``"cd"`` or ``"ct"``.
        solver: the teacher's ODE step: ``ddim`` (= ``euler``, LCM) or ``heun`` (CD paper).
        num_scales: grid size ``N`` (``N + 1`` times) for CD and non-curriculum CT.
        skip: LCM's skipping interval ``k`` (grid steps per teacher step).
        ema_decay: target network ``theta^- <- mu theta^- + (1 - mu) theta``; 0: iCT's
            ``theta^- = stopgrad(theta)``.
        distance: ``l2`` or ``pseudo_huber``.
        huber_c: pseudo-Huber ``c`` (``None``: iCT's ``0.00054 sqrt(d)``).
        weighting: ``uniform`` or ``ict`` (``1 / (r_{n+1} - r_n)``, noise levels ``sigma/alpha``).
        sigma_data: data standard deviation of the scalings.
        t_min: boundary time of ``f``; the grid starts here.
        t_max: last time of the grid (below 1 for Heun on rectified flow).
        grid: ``uniform`` in ``t`` (CD, LCM) or ``karras`` (CM / iCT sigmas mapped to ``t``).
        ict_curriculum: grow ``N`` with iCT's ``N(k)`` (``s0``, ``s1``) over ``total_steps`` and
            draw grid intervals from iCT's discrete lognormal (``p_mean``, ``p_std``).
        s0: iCT's initial number of intervals.
        s1: iCT's final number of intervals.
        p_mean: iCT's lognormal mean of ``ln sigma``.
        p_std: iCT's lognormal std of ``ln sigma``.
        total_steps: training length for the curricula (iCT ``N(k)``, TSCD stages).
        segments: TSCD segment count (1: plain consistency to ``t_min``).
        progressive_segments: Hyper-SD's ``8 -> 4 -> 2 -> 1`` over ``total_steps``
            (overrides ``segments``).
        guidance_scale: fixed CFG weight of the teacher (LCM's ``w``); ``None``: unguided.
        guidance_range: ``[lo, hi]``: each sample draws ``w ~ U[lo, hi]`` (LCM); overrides it.
        uncond: the null condition label for CFG (e.g. ``-1``).
        guidance_embed: LCM's guidance-conditioned student ``f_theta(z_t, w, c, t)`` (Luo et al.
            2023, "Latent Consistency Models", sec. 4.2 and Alg. 1): the student, its EMA and the
            target see the same per-sample ``w`` as the teacher, through
            :func:`~onestep.core.denoiser.with_guidance` (the Denoiser turns it into the w-embedding
            ``timestep_cond``, e.g. of a ``UNet2DConditionModel(time_cond_proj_dim=...)``, or a
            ``tiny_denoiser_module(guidance_dim=...)``); :meth:`sample` then needs
            ``guidance_scale``. Needs CFG (``guidance_scale`` or ``guidance_range``). Off: one
            student for the range of ``w`` it was trained on (LCM-LoRA).
        lora_rank: > 0 trains only LoRA adapters of this rank on the student (LCM-LoRA).
        lr: Adam learning rate.
        betas: Adam betas.
        sample_times: times of :meth:`sample` (multi-step consistency sampling).
        seed: seed of the per-step draws.
        export_path: if set, :meth:`export_student` writes here when training ends.
    """

    frozen_modules = ("teacher", "guided")

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        mode: str = "cd",
        solver: str = "ddim",
        num_scales: int = 18,
        skip: int = 1,
        ema_decay: float = 0.95,
        distance: str = "l2",
        huber_c: float | None = None,
        weighting: str = "uniform",
        sigma_data: float = 0.5,
        t_min: float = 0.0,
        t_max: float = 1.0,
        grid: str = "uniform",
        ict_curriculum: bool = False,
        s0: int = 10,
        s1: int = 1280,
        p_mean: float = -1.1,
        p_std: float = 2.0,
        total_steps: int = 1000,
        segments: int = 1,
        progressive_segments: bool = False,
        guidance_scale: float | None = None,
        guidance_range: tuple[float, float] | None = None,
        uncond: int | None = None,
        guidance_embed: bool = False,
        lora_rank: int = 0,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        sample_times: list[float] | None = None,
        seed: int = 0,
        export_path: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["student", "teacher"])
        _check_args(mode, teacher, solver, weighting, skip, ema_decay)
        if lora_rank > 0:
            net = getattr(student, "net", student)
            lora.add_lora(net, rank=lora_rank)
            lora.freeze_all_but_lora(net)
        self.student = ConsistencyFunction(student, sigma_data, t_min)
        self.process = self.student.process
        if solver == "heun" and float(self.process.alpha(torch.tensor([t_max]))) <= 0:
            raise ValueError(
                f"solver='heun' needs alpha(t_max) > 0, but alpha({t_max}) = 0 for "
                f"{self.process!r}; set t_max below 1 (e.g. 0.995) or use solver='ddim'"
            )
        # The EMA target theta^-: training state (checkpointed), never trained by the optimizer.
        self.target = copy.deepcopy(self.student).requires_grad_(False) if ema_decay > 0 else None
        # Frozen here, once: the teacher is the fixed target and never trains.
        self.teacher = None if teacher is None else teacher.requires_grad_(False).eval()
        self.guided = self._guided(teacher, guidance_scale, guidance_range, uncond)
        _check_guidance_embed(guidance_embed, self.guided is not None, student)
        self.grid = ConsistencyGrid(self.process, grid, t_min, t_max, num_scales, skip)
        self.rng = GlobalBatchRNG(seed)
        self.sample_times = [1.0] if sample_times is None else list(sample_times)

    @staticmethod
    def _guided(
        teacher: nn.Module | None,
        scale: float | None,
        scale_range: tuple[float, float] | None,
        uncond: int | None,
    ) -> Guided | None:
        if teacher is None or (scale is None and scale_range is None):
            return None
        if uncond is None:
            raise ValueError("CFG needs the null condition; pass uncond (e.g. -1)")
        if scale_range is not None:
            lo, hi = scale_range
            w: float | tuple[float, float] = (float(lo), float(hi))
        else:
            w = float(scale)  # pyright: ignore[reportArgumentType]
        return Guided(teacher, w, torch.tensor([uncond]))  # pyright: ignore[reportArgumentType]

    def train(self, mode: bool = True) -> ConsistencyDistillation:
        """Switch trainable parts to ``mode``; teacher and target stay in eval mode."""
        super().train(mode)
        for frozen in (self.teacher, self.target):
            if frozen is not None:
                frozen.eval()
        return self

    # -- the algorithm box ------------------------------------------------------------------------

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """One consistency update (Song et al. 2023, Alg. 2 / 3); the EMA follows the step."""
        self.rng.start(self, micro_batch_iteration(self, batch_idx))
        if "x0" not in batch:
            raise ValueError(
                "consistency distillation/training needs real samples: give the datamodule a "
                "`real` source so batches carry 'x0'"
            )
        x0, cond = batch["x0"], batch.get("cond")
        t_cur, t_next = self.draw_times(x0.shape[0], x0.device)
        eps = self.rng.randn(x0.shape, x0.device).to(x0)
        x_next = self.process.add_noise(x0, eps, t_next)
        # One w per sample, shared by the guided teacher and (guidance_embed) the student.
        w = None if self.guided is None else self.guidance_weights(x0)
        with torch.no_grad():
            x_cur = self.previous_point(x0, eps, x_next, t_next, t_cur, cond, w)
        f_online, f_target = self.outputs(x_next, t_next, x_cur, t_cur, self.student_cond(cond, w))
        weight = None
        if self.hparams["weighting"] == "ict":
            weight = cm.ict_weight(self.grid.level(t_next), self.grid.level(t_cur)).to(x0)
        loss = cm.consistency_loss(
            f_online, f_target, weight, self.hparams["distance"], self.hparams["huber_c"]
        ).mean()
        self.log_dict(
            {
                "loss/student": loss.detach(),
                "health/num_scales": float(self.grid.num_scales),
                "health/segments": float(self.current_segments()),
                "health/ema_gap": self.ema_gap(),
            }
        )
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """``theta^- <- mu theta^- + (1 - mu) theta`` after the optimizer step."""
        if self.target is not None:
            ema_update_(self.target, self.student, self.hparams["ema_decay"])

    # -- pieces -----------------------------------------------------------------------------------

    def draw_times(self, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(t_cur, t_next)`` ``[B]`` each: ``t_n`` and ``t_{n+k}`` of the (curriculum) grid."""
        hp = self.hparams
        if hp["ict_curriculum"]:
            size = cm.ict_num_scales(self.global_step, hp["total_steps"], hp["s0"], hp["s1"])
            self.grid.resize(size - 1)
            probs = cm.ict_time_probs(self.grid.levels(), hp["p_mean"], hp["p_std"])
            idx = torch.multinomial(probs, n, replacement=True, generator=self.rng.generator)
        else:
            high = self.grid.num_scales - self.grid.skip + 1
            idx = torch.randint(high, (n,), generator=self.rng.generator)
        return self.grid.pair(idx.to(device))

    def previous_point(
        self,
        x0: Tensor,
        eps: Tensor,
        x_next: Tensor,
        t_next: Tensor,
        t_cur: Tensor,
        cond: Any,
        w: Tensor | None = None,
    ) -> Tensor:
        """``x_hat_{t_n}``: one teacher ODE step (CD) or the same ``(x0, eps)`` at ``t_n`` (CT).

        ``w``: the guided teacher's CFG weights ``[B]`` (drawn by :meth:`guidance_weights` if
        ``None``).
        """
        if self.hparams["mode"] == "ct":
            return self.process.add_noise(x0, eps, t_cur)
        teacher: Any = self.teacher
        if self.guided is not None:
            teacher = _FixedScaleTeacher(self.guided, self.guidance_weights(x0) if w is None else w)
        return ode_step(teacher, x_next, t_next, t_cur, self.hparams["solver"], cond)

    def student_cond(self, cond: Any, w: Tensor | None) -> Any:
        """The student's (and target's) condition: ``cond`` plus ``w`` with ``guidance_embed``.

        Without ``guidance_embed`` the student does not see ``w``: ``cond`` is returned as is.

        Raises:
            ValueError: with ``guidance_embed`` and no ``w``.
        """
        if not self.hparams["guidance_embed"]:
            return cond
        if w is None:
            raise ValueError(
                "this consistency student was distilled with guidance_embed=True and takes the "
                "CFG weight w: pass guidance_scale= (a float, or a [B] tensor)"
            )
        return with_guidance(cond, w)

    def guidance_weights(self, x0: Tensor) -> Tensor:
        """LCM's CFG weight per sample ``[B]``: fixed, or ``w ~ U[lo, hi]`` from the step's RNG."""
        lo_hi = self.hparams["guidance_range"]
        if lo_hi is None:
            return torch.full((x0.shape[0],), float(self.hparams["guidance_scale"])).to(x0)
        return self.rng.uniform(x0.shape[0], float(lo_hi[0]), float(lo_hi[1]), x0.device).to(x0)

    def current_segments(self) -> int:
        """TSCD's segment count now (Hyper-SD's progressive schedule if enabled)."""
        if self.hparams["progressive_segments"]:
            return cm.segment_schedule(self.global_step, self.hparams["total_steps"])
        return self.hparams["segments"]

    def outputs(
        self, x_next: Tensor, t_next: Tensor, x_cur: Tensor, t_cur: Tensor, cond: Any
    ) -> tuple[Tensor, Tensor]:
        """Online ``f_theta(x_next, t_next)`` and target ``f_{theta^-}(x_cur, t_cur)``.

        With ``segments > 1`` both are carried (DDIM, with their own ``x0``) to the lower edge of
        ``t_next``'s segment; ``t_cur`` is clamped to that edge so the pair stays in one segment.
        """
        target = self.student if self.target is None else self.target
        segments = self.current_segments()
        if segments == 1:
            online = self.student(x_next, t_next, cond)
            with torch.no_grad():
                return online, target(x_cur, t_cur, cond)
        edge = cm.segment_lower_edge(t_next, segments, self.hparams["t_min"]).to(t_next)
        t_cur = torch.maximum(t_cur, edge)
        online = ode_step(self.student, x_next, t_next, edge, "ddim", cond)
        with torch.no_grad():
            return online, ode_step(target, x_cur, t_cur, edge, "ddim", cond)

    @torch.no_grad()
    def ema_gap(self) -> Tensor:
        """``||theta - theta^-||`` over trainable parameters (0 without an EMA target)."""
        if self.target is None:
            return torch.zeros(())
        online = dict(self.student.named_parameters())
        gap = sum(
            ((online[k] - p) ** 2).sum() for k, p in self.target.named_parameters() if k in online
        )
        return torch.as_tensor(gap).sqrt()

    @torch.no_grad()
    def sample(
        self,
        z: Tensor,
        cond: Any = None,
        times: list[float] | None = None,
        guidance_scale: float | Tensor | None = None,
    ) -> Tensor:
        """Multi-step consistency sampling from latents ``z`` (EMA target if there is one).

        ``guidance_scale``: the CFG weight ``w`` (float or ``[B]``) the student is conditioned on;
        required with ``guidance_embed``, rejected without it (the student's ``w`` was fixed by
        training).
        """
        embed = self.hparams["guidance_embed"]
        if guidance_scale is not None and not embed:
            raise ValueError(
                "guidance_scale is for a student distilled with guidance_embed=True; this one "
                "takes no w (its guidance was fixed by training)"
            )
        w = None
        if guidance_scale is not None:
            w = torch.as_tensor(guidance_scale, dtype=z.dtype, device=z.device)
            w = w.expand(z.shape[0]) if w.ndim == 0 else w
        f = self.student if self.target is None else self.target
        times = self.sample_times if times is None else times
        return consistency_sample(f, z, times, self.student_cond(cond, w))

    # -- optimizers, checkpoints, export ----------------------------------------------------------

    def configure_optimizers(self) -> Any:
        """Adam over the student's trainable parameters (only LoRA ones for LCM-LoRA)."""
        params = [p for p in self.student.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.hparams["lr"], betas=tuple(self.hparams["betas"]))  # pyright: ignore[reportArgumentType]

    def export_student(self, path: str | Path) -> Path:
        """Write the consistency function (EMA target if any) as safetensors."""
        return export_student(self.student if self.target is None else self.target, path)

    def on_train_end(self) -> None:
        """Export to ``export_path`` (rank 0 only) when one is configured."""
        if self.hparams["export_path"] and self.trainer.is_global_zero:
            self.export_student(self.hparams["export_path"])


def _check_guidance_embed(embed: bool, guided: bool, student: nn.Module) -> None:
    dim = getattr(student, "guidance_dim", None)  # None: a Denoiser-like that does not say
    if embed and not guided:
        raise ValueError(
            "guidance_embed=True conditions the student on the teacher's CFG weight w; set "
            "guidance_scale or guidance_range (and uncond), with a teacher"
        )
    if embed and dim == 0:
        raise ValueError(
            "guidance_embed=True needs a student that takes w: a UNet2DConditionModel with "
            "time_cond_proj_dim, or tiny_denoiser_module(guidance_dim=...)"
        )
    if not embed and isinstance(dim, int) and dim > 0:
        raise ValueError(
            f"the student takes a guidance weight (w-embedding of size {dim}) but "
            "guidance_embed=False would never give it one; set guidance_embed=True"
        )


def _check_args(mode: str, teacher: Any, solver: str, weighting: str, skip: int, ema: float):
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    if mode == "cd" and teacher is None:
        raise ValueError("mode='cd' needs a teacher; pass teacher= or use mode='ct'")
    if solver not in STEP_SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; use one of {STEP_SOLVERS}")
    if weighting not in ("uniform", "ict"):
        raise ValueError(f"unknown weighting {weighting!r}; use 'uniform' or 'ict'")
    if skip < 1:
        raise ValueError(f"skip must be >= 1 (LCM uses 20 of 1000 steps), got {skip}")
    if not 0.0 <= ema < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1) (0: iCT's stop-gradient), got {ema}")

"""A minimal, data-free DMD2 distillation of the digits teacher into a one-step student.

Yin et al. 2024, "Improved Distribution Matching Distillation for Fast Image Synthesis" (DMD2):
the student ``G(z) = x0`` from pure noise at ``t = 1``; a fake score tracks the student's
distribution by denoising score matching on detached student samples; the student follows the
distribution-matching gradient (DMD, Yin et al. 2023, eq. 7-8), with the fake score updated several
times per student step (two time-scale update rule, DMD2 sec. 4.1). Student and fake score both
start from the teacher's weights. No regression loss and no GAN term: the loop never sees data.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from onestep.core import noise
from onestep.core.demo.networks import DigitsDenoiserNet
from onestep.core.demo.teacher import denoising_loss
from onestep.core.denoiser import Denoiser
from onestep.core.objectives import dmd_loss

__all__ = ["DMD2Config", "distill", "dmd_gradient_loss", "fake_score_step", "generate"]


def dmd_gradient_loss(x: Tensor, x0_real: Tensor, x0_fake: Tensor, eps: float = 1e-6) -> Tensor:
    """Distribution-matching student loss (DMD, Yin et al. 2023, eq. 7-8; DMD2 eq. 2).

    The KL gradient ``E[(s_fake - s_real) dG/dtheta]`` written with ``x0`` predictions (for an
    affine process ``s_fake - s_real = alpha / sigma^2 (x0_fake - x0_real)``) and eq. 8's weight
    ``1 / mean|x - x0_real|`` per sample in place of ``sigma^2 / alpha``. The loss is the surrogate
    ``0.5 ||x - sg(x - grad)||^2``, whose gradient with respect to ``x`` is exactly ``grad``.

    Args:
        x: student samples that require grad, ``[B, ...]``.
        x0_real: teacher's ``x0`` prediction at the noised ``x``, same shape.
        x0_fake: fake score's ``x0`` prediction at the noised ``x``, same shape.
        eps: guards the per-sample normaliser against division by zero.

    Returns:
        ``[B]``; its gradient with respect to ``x`` is
        ``(x0_fake - x0_real) / mean|x - x0_real|`` per sample (mean over the non-batch dims).
    """
    # The library's dmd_loss has the same gradient divided by the per-sample element count.
    return dmd_loss(x, x0_real, x0_fake, eps=eps) * x[0].numel()


@dataclass(frozen=True)
class DMD2Config:
    """Hyperparameters of the demo's DMD2 loop.

    Args:
        steps: student updates.
        fake_steps: fake-score updates per student update (two time-scale rule; DMD2 uses 5).
        batch_size: student samples per update.
        lr_student: Adam learning rate of the student.
        lr_fake: Adam learning rate of the fake score.
        t_min: lowest diffusion time of the distribution-matching gradient.
        t_max: highest diffusion time of the distribution-matching gradient.
        seed: seed of latents, times and noise.
    """

    steps: int = 1000
    fake_steps: int = 5
    batch_size: int = 128
    lr_student: float = 1e-4
    lr_fake: float = 1e-4
    t_min: float = 0.02
    t_max: float = 0.98
    seed: int = 0


def generate(student: Denoiser, z: Tensor) -> Tensor:
    """One-step generation: the student's ``x0`` from pure noise ``z`` at ``t = 1``."""
    return student(z, torch.ones(z.shape[0], device=z.device, dtype=z.dtype))


def fake_score_step(
    fake_score: Denoiser, opt: torch.optim.Optimizer, x_fake: Tensor, gen: torch.Generator
) -> Tensor:
    """One denoising-score-matching update of the fake score on detached student samples."""
    t = noise.uniform(x_fake.shape[0], device=x_fake.device, generator=gen)
    eps = torch.randn(x_fake.shape, generator=gen, device=x_fake.device)
    loss = denoising_loss(fake_score, x_fake.detach(), t, eps).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def student_step(
    student: Denoiser,
    teacher: Denoiser,
    fake_score: Denoiser,
    opt: torch.optim.Optimizer,
    z: Tensor,
    config: DMD2Config,
    gen: torch.Generator,
) -> Tensor:
    """One distribution-matching update of the student; teacher and fake score stay untouched."""
    x = generate(student, z)
    t = noise.uniform(
        x.shape[0], t_min=config.t_min, t_max=config.t_max, device=x.device, generator=gen
    )
    eps = torch.randn(x.shape, generator=gen, device=x.device)
    with torch.no_grad():
        x_t = teacher.process.add_noise(x, eps, t)
        x0_real = teacher(x_t, t)
        x0_fake = fake_score(x_t, t)
    loss = dmd_gradient_loss(x, x0_real, x0_fake).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def distill(
    teacher: Denoiser, config: DMD2Config, *, progress: bool = True
) -> tuple[Denoiser, list[float]]:
    """Distill the frozen ``teacher`` into a one-step student with DMD2.

    Returns:
        ``(student, losses)``: the student in eval mode and its per-step DMD loss.
    """
    device = next(teacher.parameters()).device
    gen = torch.Generator(device=device).manual_seed(config.seed)
    # DMD2 initialises both trainable networks from the teacher.
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    fake_score = copy.deepcopy(teacher).train().requires_grad_(True)
    opt_student = torch.optim.Adam(student.parameters(), lr=config.lr_student, betas=(0.0, 0.99))
    opt_fake = torch.optim.Adam(fake_score.parameters(), lr=config.lr_fake, betas=(0.0, 0.99))
    shape = (config.batch_size, *_sample_shape(teacher))
    losses: list[float] = []
    bar = tqdm(range(config.steps), desc="dmd2", disable=not progress, leave=False)
    for _ in bar:
        for _ in range(config.fake_steps):
            with torch.no_grad():
                x_fake = generate(student, torch.randn(shape, generator=gen, device=device))
            fake_score_step(fake_score, opt_fake, x_fake, gen)
        z = torch.randn(shape, generator=gen, device=device)
        loss = student_step(student, teacher, fake_score, opt_student, z, config, gen)
        losses.append(float(loss))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    return student.eval().requires_grad_(False), losses


def _sample_shape(denoiser: Denoiser) -> tuple[int, ...]:
    """``(C, S, S)`` of the digits network inside ``denoiser``."""
    net = denoiser.net
    if not isinstance(net, DigitsDenoiserNet):
        raise TypeError(
            f"the demo's DMD2 loop expects a DigitsDenoiserNet, got {type(net).__name__}"
        )
    return (net.channels, net.size, net.size)

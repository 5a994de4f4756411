"""Train (or load from the user cache) the digits teacher: a rectified-flow denoiser.

The teacher is :class:`~onestep.core.demo.networks.DigitsDenoiserNet` wrapped in a
:class:`~onestep.core.denoiser.Denoiser` with the rectified-flow process (``alpha = 1 - t``,
``sigma = t``) and native ``"flow"`` (velocity) prediction, so ``x0`` is well defined at ``t = 1``
where the one-step student starts.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from onestep.core import noise
from onestep.core.demo import _cache, networks
from onestep.core.denoiser import Denoiser
from onestep.core.ema import ema_update_
from onestep.core.noise import NoiseProcess

__all__ = [
    "TeacherConfig",
    "build_denoiser",
    "denoising_loss",
    "load_or_train_teacher",
    "native_target",
    "train_teacher",
]


@dataclass(frozen=True)
class TeacherConfig:
    """Everything that determines the teacher's weights (the cache key hashes it).

    Args:
        size: image side.
        width: hidden width of the residual MLP.
        depth: residual blocks.
        steps: training iterations.
        batch_size: images per iteration.
        lr: Adam learning rate (cosine-decayed to 0).
        ema_decay: decay of the weight average that becomes the teacher.
        seed: seed of initialisation, batches, times and noise.
    """

    size: int = 8
    width: int = 256
    depth: int = 3
    steps: int = 4000
    batch_size: int = 128
    lr: float = 1e-3
    ema_decay: float = 0.999
    seed: int = 0


def build_denoiser(config: TeacherConfig) -> Denoiser:
    """A fresh digits denoiser, initialised from ``config.seed`` (the global RNG is untouched).

    Rectified flow, flow prediction, network time ``1000 t``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = networks.DigitsDenoiserNet(size=config.size, width=config.width, depth=config.depth)
    return Denoiser(net, noise.flow(), prediction="flow", timestep=1000.0)


def native_target(prediction: str, x0: Tensor, eps: Tensor, t: Tensor, process: NoiseProcess):
    """The regression target of a network with native ``prediction`` for ``x_t = a x0 + s eps``.

    ``eps``: ``eps``; ``x0``: ``x0``; ``v``: ``alpha eps - sigma x0`` (Salimans & Ho 2022, sec. 4);
    ``flow``: ``alpha' x0 + sigma' eps`` (Lipman et al. 2023, eq. 23 for rectified flow).
    """
    alpha, sigma = process.coefficients(t, x0.ndim)
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return alpha * eps - sigma * x0
    d_alpha = noise.append_dims(process.d_alpha(t), x0.ndim)
    d_sigma = noise.append_dims(process.d_sigma(t), x0.ndim)
    return d_alpha * x0 + d_sigma * eps


def denoising_loss(denoiser: Denoiser, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """Denoising score matching in the network's native parametrisation, per sample ``[B]``.

    ``|| net(x_t, t) - target ||^2`` averaged over pixels, with ``x_t = alpha x0 + sigma eps``
    (Vincent 2011; for rectified flow this is the flow-matching loss of Lipman et al. 2023, eq. 23).
    Used for the teacher and, on detached student samples, for DMD2's fake score.
    """
    x_t = denoiser.process.add_noise(x0, eps, t)
    target = native_target(denoiser.prediction, x0, eps, t, denoiser.process)
    return (denoiser.raw(x_t, t) - target).square().mean(dim=tuple(range(1, x0.ndim)))


def train_teacher(
    denoiser: Denoiser, images: Tensor, config: TeacherConfig, progress: bool = True
) -> None:
    """Train ``denoiser`` in place on ``images`` ``[N, 1, S, S]``; it ends holding the EMA weights.

    ``t ~ U[0, 1]``, Adam with a cosine learning-rate decay; all randomness from ``config.seed``.
    """
    gen = torch.Generator(device=images.device).manual_seed(config.seed)
    ema = copy.deepcopy(denoiser).requires_grad_(False)
    opt = torch.optim.Adam(denoiser.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(config.steps, 1))
    denoiser.train()
    bar = tqdm(range(config.steps), desc="teacher", disable=not progress, leave=False)
    for _ in bar:
        idx = torch.randint(images.shape[0], (config.batch_size,), generator=gen, device=gen.device)
        x0 = images[idx]
        t = noise.uniform(x0.shape[0], device=x0.device, generator=gen)
        eps = torch.randn(x0.shape, generator=gen, device=x0.device)
        loss = denoising_loss(denoiser, x0, t, eps).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema_update_(ema, denoiser, config.ema_decay)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    denoiser.load_state_dict(ema.state_dict())
    denoiser.eval()


def load_or_train_teacher(
    config: TeacherConfig,
    images: Tensor,
    *,
    retrain: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[Denoiser, bool]:
    """The frozen teacher for ``config``: from the user cache, or trained now and cached.

    Returns:
        ``(teacher, from_cache)``; the teacher is in eval mode with gradients off.
    """
    teacher = build_denoiser(config).to(images.device)
    sources = [Path(networks.__file__), Path(__file__)]

    def train(net: torch.nn.Module) -> None:
        train_teacher(teacher, images, config, progress=progress)

    from_cache = _cache.load_or_train(
        "teacher", asdict(config), sources, teacher, train, retrain=retrain, log=log
    )
    # Frozen in one place: every later phase reads the teacher, none may update it.
    return teacher.eval().requires_grad_(False), from_cache

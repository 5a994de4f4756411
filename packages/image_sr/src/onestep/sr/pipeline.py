"""The shared training pipeline of ``onestep-sr demo`` and ``onestep-sr bench``.

Train (or load from the user cache) the package's pixel-space SR teacher on the embedded photos,
then train one-step students from it, each with the same data, crops and seed. Every phase is a
plain Lightning ``fit`` with ``max_epochs=1`` over ``steps * batch_size`` crops, so one training
step is one batch whatever the number of optimizers a method steps per batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

from onestep.core.demo._cache import load_or_train
from onestep.sr.data import datasets, samples
from onestep.sr.data.datamodule import SRDataModule
from onestep.sr.methods.osediff import OSEDiffVSD
from onestep.sr.models import teacher as teacher_module
from onestep.sr.models import unet as unet_module
from onestep.sr.models.teacher import SRTeacher
from onestep.sr.models.unet import tiny_unet

__all__ = ["STUDENTS", "TeacherConfig", "fit", "load_or_train_teacher", "train_student"]


@dataclass(frozen=True)
class TeacherConfig:
    """Everything that determines the demo teacher's weights (the cache key hashes it).

    Args:
        scale: SR factor.
        crop: HR training crop side.
        batch_size: crops per step.
        steps: training steps.
        widths: UNet channels per level.
        lr: AdamW learning rate.
        seed: seed of initialisation, crops and noise.
    """

    scale: int = 4
    crop: int = 64
    batch_size: int = 8
    steps: int = 1000
    widths: tuple[int, ...] = (32, 64, 64)
    lr: float = 1e-3
    seed: int = 0


#: HR crop of the students' training (larger than the smoke teacher's: fidelity needs context).
STUDENT_CROP = 64


def datamodule(scale: int, crop: int, batch_size: int, steps: int, seed: int) -> SRDataModule:
    """The embedded photos as ``steps`` batches of bicubic ``x scale`` crops."""
    return SRDataModule(
        scale=scale,
        crop=crop,
        batch_size=batch_size,
        samples_per_epoch=steps * batch_size,
        seed=seed,
    )


def fit(module: L.LightningModule, data: SRDataModule, out: Path | None, progress: bool) -> None:
    """One epoch of ``module`` on ``data``, no validation, no logger, no checkpoints."""
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=str(out) if out is not None else None,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # Frozen teachers stay in eval mode on purpose.
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        trainer.fit(module, datamodule=data)


def load_or_train_teacher(
    config: TeacherConfig, *, retrain: bool = False, progress: bool = True, log=print
) -> tuple[SRTeacher, bool]:
    """The demo teacher from the user cache, or trained now and cached; ``(teacher, cached)``."""
    teacher = SRTeacher(
        net=tiny_unet(widths=config.widths, seed=config.seed), scale=config.scale, lr=config.lr
    )

    def train(_: Any) -> None:
        L.seed_everything(config.seed, verbose=False)
        data = datamodule(config.scale, config.crop, config.batch_size, config.steps, config.seed)
        fit(teacher, data, None, progress)

    # Only the EMA network is cached: it is what the sampler (and every student) uses.
    # The key: the config, the network/loss code and the data code (not this file, which also
    # holds the students' registry: adding a student must not retrain the teacher).
    sources = [Path(m.__file__ or "") for m in (teacher_module, unet_module, datasets, samples)]
    cached = load_or_train(
        "sr-teacher", asdict(config), sources, teacher.ema_net, train, retrain=retrain, log=log
    )
    return teacher.eval().requires_grad_(False), cached


def _osediff(teacher: SRTeacher, steps: int, **kwargs: Any) -> L.LightningModule:
    """OSEDiff with fidelity-leaning weights for a short CPU run.

    MSE 1, perceptual 0.1, VSD 0.1: on the smoke teacher (300 steps) with 150 student steps,
    VSD at weight 1 or 0.3 cost 0.1-0.3 dB PSNR on the held-out photos (the realism-distortion
    trade-off) and left the student at or below bicubic; 0.1 / 0.1 beat it by 0.26 dB.
    """
    options: dict[str, Any] = {"lr_student": 3e-4, "lr_fake": 3e-4}
    options |= {"perceptual_weight": 0.1, "vsd_weight": 0.1} | kwargs
    return OSEDiffVSD(teacher=teacher.ema_denoiser, scale=teacher.scale, **options)


def _ctmsr(teacher: SRTeacher, steps: int, **kwargs: Any) -> L.LightningModule:
    """CTMSR needs no teacher: a fresh network of the teacher's shape, trained from scratch.

    l2 CT distance (the official Charbonnier does not train a tiny net in hundreds of steps, see
    :mod:`onestep.sr.methods.ctmsr`); DTM joins for the second half of the run.
    """
    from onestep.sr.methods.ctmsr import CTMSR

    unet: Any = teacher.net
    widths = tuple(unet.unet.config["block_out_channels"])
    options: dict[str, Any] = {"distance": "l2", "lr": 1e-3, "betas": (0.9, 0.99)}
    options["ema_decay"] = 0.99
    options |= {"total_steps": steps, "ct_steps": steps // 2, "dtm_refresh": max(1, steps // 8)}
    return CTMSR(net=tiny_unet(widths=widths), scale=teacher.scale, **(options | kwargs))


def _tadsr(teacher: SRTeacher, steps: int, **kwargs: Any) -> L.LightningModule:
    from onestep.sr.methods.tadsr import TADSR

    options: dict[str, Any] = {"teacher_steps": 4, "lr_student": 2e-4, "lr_disc": 2e-4}
    options |= kwargs
    return TADSR(teacher=teacher.ema_denoiser, scale=teacher.scale, **options)


#: name -> ``(teacher, steps, **overrides) -> LightningModule`` of every benchmarked student.
STUDENTS: dict[str, Callable[..., L.LightningModule]] = {
    "osediff": _osediff,
    "ctmsr": _ctmsr,
    "tadsr": _tadsr,
}


def train_student(
    name: str,
    teacher: SRTeacher,
    config: TeacherConfig,
    steps: int,
    *,
    progress: bool = True,
    **overrides: Any,
) -> L.LightningModule:
    """Train the ``name`` student for ``steps`` batches of the teacher's data."""
    if name not in STUDENTS:
        raise ValueError(f"unknown student {name!r}; use one of {sorted(STUDENTS)}")
    L.seed_everything(config.seed, verbose=False)
    module = STUDENTS[name](teacher, steps, **overrides)
    data = datamodule(config.scale, STUDENT_CROP, config.batch_size, steps, config.seed + 1)
    fit(module, data, None, progress)
    return module.eval()


def threads(n: int | None) -> None:
    """Use ``n`` intra-op threads (``None``: torch's default)."""
    if n:
        torch.set_num_threads(n)

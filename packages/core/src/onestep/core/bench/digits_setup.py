"""What every digits part of the benchmark shares: teacher, classifier, latents, reference features.

The digits teacher (rectified flow, flow prediction; :mod:`onestep.core.demo.teacher`) and the
classifier whose 64-d penultimate features give the Frechet distance
(:mod:`onestep.core.demo.classifier`) come from the user cache, keyed by their configs, so the
DMD2 digits part (:mod:`.digits`) and the trajectory digits part (:mod:`.digits_traj`) score
against the same networks, the same fixed latents (seed ``seed + 1``) and the same reference
features (the training split).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from onestep.core.data.digits import load_digits_tensor
from onestep.core.demo import evaluate
from onestep.core.demo.classifier import ClassifierConfig, load_or_train_classifier
from onestep.core.demo.teacher import TeacherConfig, load_or_train_teacher
from onestep.core.denoiser import Denoiser

__all__ = ["DigitsSetup", "load_digits_setup"]


@dataclass
class DigitsSetup:
    """The frozen networks and fixed tensors of a digits benchmark run.

    Attributes:
        teacher: frozen rectified-flow teacher (eval mode, no gradients).
        features: the classifier's penultimate features, ``[B, 1, 8, 8] -> [B, 64]``.
        x_train: training digits ``[N, 1, 8, 8]`` in [-1, 1] (FD reference and data for CT).
        ref: features of ``x_train``, the FD reference ``[N, 64]``.
        z: fixed evaluation latents ``[n_eval, 1, 8, 8]`` shared by every generator row.
        held_out: the validation split ``[M, 1, 8, 8]`` (the "real held-out digits" row).
    """

    teacher: Denoiser
    features: Callable[[Tensor], Tensor]
    x_train: Tensor
    ref: Tensor
    z: Tensor
    held_out: Tensor

    def fd(self, x: Tensor) -> float:
        """Frechet distance of samples ``x`` (clamped to [-1, 1]) to the training features."""
        with torch.no_grad():
            return evaluate.fd(self.features, x, self.ref)


def load_digits_setup(
    teacher_steps: int,
    classifier_steps: int,
    batch_size: int,
    n_eval: int,
    seed: int,
    log: Callable[[str], None] = print,
) -> DigitsSetup:
    """Load (or train and cache) the classifier and teacher; draw the fixed latents.

    Args:
        teacher_steps: teacher training iterations (part of the cache key).
        classifier_steps: classifier training iterations (part of the cache key).
        batch_size: the teacher's training batch (part of its cache key).
        n_eval: evaluation latents.
        seed: split, training and (as ``seed + 1``) latent seed.
        log: where cache status lines go.
    """
    split = {"val_fraction": 0.2, "seed": seed}
    x_train, y_train = load_digits_tensor(split="train", **split)
    c_cfg = ClassifierConfig(steps=classifier_steps, seed=seed)
    classifier, _ = load_or_train_classifier(c_cfg, x_train, y_train, progress=False, log=log)
    t_cfg = TeacherConfig(steps=teacher_steps, batch_size=batch_size, seed=seed)
    teacher, _ = load_or_train_teacher(t_cfg, x_train, progress=False, log=log)
    with torch.no_grad():
        ref = classifier.features(x_train)
    gen = torch.Generator().manual_seed(seed + 1)
    z = torch.randn((n_eval, *x_train.shape[1:]), generator=gen)
    held_out = load_digits_tensor(split="val", **split)[0]
    return DigitsSetup(teacher, classifier.features, x_train, ref, z, held_out)

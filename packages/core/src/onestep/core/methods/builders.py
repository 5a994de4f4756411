"""Builders that make toy parts nameable from YAML (``class_path`` / ``init_args``).

A config cannot hold a ``Tensor`` or a ``NoiseProcess`` object, so these functions take plain
names and numbers and return the modules ``DistributionMatching`` needs::

    model:
      class_path: onestep.core.methods.DistributionMatching
      init_args:
        teacher: {class_path: onestep.core.methods.builders.gmm_teacher_module,
                  init_args: {preset: ring, process: flow}}
        student: {class_path: onestep.core.methods.builders.tiny_denoiser_module}
"""

from __future__ import annotations

import torch
from torch import Tensor

from onestep.core import noise
from onestep.core.data.gmm import GaussianMixture, GMMDenoiser
from onestep.core.data.noise import RealData
from onestep.core.denoiser import Denoiser
from onestep.core.methods.dm_multi_student import MultiStudent
from onestep.core.testing import gmm_teacher, tiny_denoiser

__all__ = [
    "GMMData",
    "gmm_teacher_module",
    "multi_student_module",
    "noise_process",
    "tiny_denoiser_module",
]

_PROCESSES = {"flow": noise.flow, "vp": noise.vp, "edm": noise.edm, "trig": noise.trig}


def noise_process(name: str = "flow") -> noise.NoiseProcess:
    """A preset noise process by name: ``flow``, ``vp`` (cosine), ``edm`` or ``trig``."""
    if name not in _PROCESSES:
        raise ValueError(f"unknown noise process {name!r}; use one of {sorted(_PROCESSES)}")
    return _PROCESSES[name]()


def gmm_teacher_module(preset: str = "ring", process: str = "flow") -> GMMDenoiser:
    """The exact teacher ``E[x0 | x_t]`` of a 2-D Gaussian-mixture preset.

    Args:
        preset: ``ring`` (8 modes), ``grid`` (5x5) or ``unbalanced`` (ring, weights 10:1).
        process: noise process name (see :func:`noise_process`).
    """
    return gmm_teacher(preset, noise_process(process))[1]


def tiny_denoiser_module(
    dim: int = 2,
    process: str = "flow",
    prediction: str = "x0",
    hidden: int = 64,
    cond_dim: int = 0,
    seed: int = 0,
    guidance_dim: int = 0,
) -> Denoiser:
    """A :class:`~onestep.core.testing.TinyMLP` Denoiser, initialised from ``seed``.

    Args:
        dim: data dimension.
        process: noise process name (see :func:`noise_process`).
        prediction: the network's native prediction (``x0``, ``eps``, ``v``, ``flow``).
        hidden: hidden width.
        cond_dim: number of condition labels (0: unconditional).
        seed: initialisation seed (student and fake score get different ones by config).
        guidance_dim: size of LCM's w-embedding (0: the net takes no guidance weight); an LCM
            student with ``guidance_embed: true`` needs one.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return tiny_denoiser(
            dim, noise_process(process), prediction, hidden, cond_dim, guidance_dim
        )


class GMMData(RealData):
    """Real samples from a Gaussian-mixture preset (for GAN / f-divergence terms).

    Args:
        preset: ``ring``, ``grid`` or ``unbalanced``.
    """

    def __init__(self, preset: str = "ring"):
        self.preset = preset
        self.mixture: GaussianMixture = gmm_teacher(preset)[0]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples ``[n, 2]``."""
        return self.mixture.sample(n, generator)


def multi_student_module(
    num_students: int = 2,
    num_classes: int = 8,
    dim: int = 2,
    process: str = "flow",
    hidden: int = 32,
    seed: int = 0,
) -> MultiStudent:
    """MSD students: ``num_students`` tiny conditional Denoisers splitting ``num_classes`` labels.

    Args:
        num_students: K.
        num_classes: size of the label space.
        dim: data dimension.
        process: noise process name.
        hidden: width of each student.
        seed: initialisation seed of the first student (student k uses ``seed + k``).
    """
    students = [
        tiny_denoiser_module(dim, process, "x0", hidden, num_classes, seed + k)
        for k in range(num_students)
    ]
    return MultiStudent(list(students), num_classes)

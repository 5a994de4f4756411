"""Builders that make sCM parts nameable from YAML (``class_path`` / ``init_args``)."""

from __future__ import annotations

import torch

from onestep.core.methods.scm_jvp import TrigFlowStudent
from onestep.core.testing import TinyMLP

__all__ = ["trigflow_mlp_student"]


def trigflow_mlp_student(
    dim: int = 2,
    hidden: int = 64,
    sigma_d: float = 0.5,
    cond_dim: int = 0,
    seed: int = 0,
    time_scale: float = 1e-3,
) -> TrigFlowStudent:
    """A :class:`~onestep.core.testing.TinyMLP` as the sCM network ``F_theta``.

    Args:
        dim: data dimension.
        hidden: hidden width.
        sigma_d: data standard deviation of the TrigFlow process.
        cond_dim: number of condition labels (0: unconditional).
        seed: initialisation seed.
        time_scale: ``c_noise(tau) = time_scale * tau``. The TinyMLP's time frequencies reach
            1000, so the default keeps every time feature below a quarter turn over
            ``[0, pi/2]``: ``F`` must be smooth in ``tau`` because sCM differentiates it along
            the trajectory. On the 2-D ring bench (``bench/traj_scm.py``) a scale of 1 trained
            to ~230x the teacher's 4-step energy distance at 1 NFE, 0.01 to ~10x, 0.001 to ~4x
            (before the other tuning there).
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return TrigFlowStudent(TinyMLP(dim, hidden, cond_dim=cond_dim), sigma_d, time_scale)

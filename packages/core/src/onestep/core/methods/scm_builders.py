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
) -> TrigFlowStudent:
    """A :class:`~onestep.core.testing.TinyMLP` as the sCM network ``F_theta``.

    Args:
        dim: data dimension.
        hidden: hidden width.
        sigma_d: data standard deviation of the TrigFlow process.
        cond_dim: number of condition labels (0: unconditional).
        seed: initialisation seed.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return TrigFlowStudent(TinyMLP(dim, hidden, cond_dim=cond_dim), sigma_d)

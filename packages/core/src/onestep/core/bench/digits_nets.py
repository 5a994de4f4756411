"""Student networks of the digits trajectory part, each built from the digits teacher's weights.

* :class:`FlowVelocity`: the teacher's raw velocity ``u(x, t)`` as a module (KD, reflow).
* :class:`TwoTimeDigitsNet`: :class:`~onestep.core.demo.networks.DigitsDenoiserNet` with a
  second time input whose embedding enters through a zero-initialised projection, so at
  initialisation it *is* the teacher whatever the second time (CTM's ``g(x_t, t, s)``, MeanFlow's
  ``u(z, r, t)``).
* :class:`TrigFlowFromFlow`: the rectified-flow teacher re-expressed as sCM's TrigFlow output
  ``F`` (Lu & Song 2024, eq. 6), exactly, so sCD starts from the teacher as in the paper (sec. 4).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from onestep.core.demo.networks import DigitsDenoiserNet, time_embedding
from onestep.core.denoiser import Denoiser

__all__ = ["FlowVelocity", "TrigFlowFromFlow", "TwoTimeDigitsNet"]


class FlowVelocity(nn.Module):
    """``u(x, t)``: the native (flow) output of a rectified-flow Denoiser, ``t`` in [0, 1].

    Args:
        denoiser: a :class:`~onestep.core.denoiser.Denoiser` with ``prediction="flow"``.
    """

    def __init__(self, denoiser: Denoiser):
        super().__init__()
        if denoiser.prediction != "flow":
            raise ValueError(
                f"FlowVelocity needs a flow-prediction Denoiser, got {denoiser.prediction!r}"
            )
        self.denoiser = denoiser

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Velocity ``dx/dt`` ``[B, ...]`` at ``x`` ``[B, ...]``, times ``t`` ``[B]``."""
        return self.denoiser.raw(x, t)


class TwoTimeDigitsNet(nn.Module):
    """``net(x, t, s)``: the digits denoiser conditioned on a second time ``s``.

    ``emb = time_mlp(e(1000 t)) + proj(e(s_scale * s))`` with ``proj``'s last layer zero at
    initialisation, so ``net(x, t, s) = base(x, 1000 t)`` for every ``s`` until training moves it.
    Times are in [0, 1]; the network time of ``t`` is ``1000 t`` as for the teacher.

    Args:
        base: the digits denoiser whose weights it takes (copied, so the teacher stays frozen).
        s_scale: network time of the second input per unit ``s``.
    """

    def __init__(self, base: nn.Module, s_scale: float = 1000.0):
        super().__init__()
        if not isinstance(base, DigitsDenoiserNet):
            raise TypeError(
                f"TwoTimeDigitsNet extends a DigitsDenoiserNet, got {type(base).__name__}"
            )
        self.base = base
        self.s_scale = s_scale
        e = base.emb_dim
        last = nn.Linear(e, e)
        nn.init.zeros_(last.weight)  # zero effect at initialisation: the net is the teacher
        nn.init.zeros_(last.bias)
        self.s_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), last)

    def forward(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """Native (flow) output ``[B, C, S, S]`` at times ``t``, ``s`` (``[B]`` each)."""
        b = self.base
        emb = b.time_mlp(time_embedding(1000.0 * t, b.emb_dim))  # (B, E)
        emb = emb + self.s_mlp(time_embedding(self.s_scale * s, b.emb_dim))
        h = b.inp(x.flatten(1))  # (B, width)
        for block in b.blocks:
            h = block(h, emb)
        return b.out(h).view_as(x)


class TrigFlowFromFlow(nn.Module):
    """sCM's ``F(x / sigma_d, tau)`` from a rectified-flow velocity net, exact at initialisation.

    TrigFlow ``x_tau = cos(tau) x0 + sin(tau) sigma_d eps`` is rectified flow's
    ``x_s = (1 - s) x0 + s eps`` rescaled: with ``D = cos(tau) + sigma_d sin(tau)``,
    ``x_s = x_tau / D`` at ``s = sigma_d sin(tau) / D``. Differentiating,
    ``dx_tau/dtau = (sigma_d cos - sin) x_s + sigma_d v(x_s, s) / D``, and the TrigFlow target is
    ``sigma_d F = dx/dtau`` (sCM, sec. 3), so
    ``F = ((cos - sin / sigma_d) x_tau + v(x_s, s)) / D``; no division by ``sin(tau)``, hence
    well conditioned near ``tau = 0``. Use with ``TrigFlowStudent(net, sigma_d, time_scale=1)``
    (``c_noise = tau``).

    Args:
        velocity: ``v(x, s)`` of rectified flow, ``s`` in [0, 1] (e.g. :class:`FlowVelocity`).
        sigma_d: TrigFlow's data standard deviation (the student's).
    """

    def __init__(self, velocity: nn.Module, sigma_d: float = 0.5):
        super().__init__()
        if sigma_d <= 0:
            raise ValueError(f"sigma_d must be > 0, got {sigma_d}")
        self.velocity, self.sigma_d = velocity, sigma_d

    def forward(self, x_in: Tensor, tau: Tensor) -> Tensor:
        """``F`` ``[B, ...]`` for ``x_in = x_tau / sigma_d`` and the angle ``tau`` ``[B]``."""
        shape = (-1,) + (1,) * (x_in.ndim - 1)
        cos, sin = torch.cos(tau).view(shape), torch.sin(tau).view(shape)
        x_tau = self.sigma_d * x_in
        d = cos + self.sigma_d * sin
        s = self.sigma_d * torch.sin(tau) / d.view(-1)  # in [0, 1] for tau in [0, pi/2]
        v = self.velocity(x_tau / d, s)
        return ((cos - sin / self.sigma_d) * x_tau + v) / d

"""The sCM network in TrigFlow form and its time derivative by forward-mode AD (``torch.func.jvp``).

:class:`TrigFlowStudent` wraps any network ``net(x, c_noise[, cond])`` (a ``TinyMLP``, a diffusers
``UNet2DModel`` or ``DiTTransformer2DModel``) as ``F_theta(x / sigma_d, c_noise(tau))`` and as the
consistency function ``f(x_t, t)`` (Lu & Song 2024, eq. 6). :func:`trigflow_jvp` returns ``F`` and
``dF/dtau`` along the trajectory, one forward-mode pass.

Attention backends and forward-mode AD (checked with torch 2.14.1 on CPU):

* ``torch.nn.functional.scaled_dot_product_attention`` picks a fused kernel by default; on CPU
  that is ``_scaled_dot_product_flash_attention_for_cpu``, which has **no forward-AD formula**:
  ``jvp`` raises ``NotImplementedError``. The **math** backend is composed of differentiable
  primitives and supports ``jvp``.
* On CUDA the flash, memory-efficient and cuDNN kernels likewise define no forward-AD formula
  in torch (not tested here: no GPU); only math works, at math's memory cost. Large-scale sCM
  (rCM, SANA-Sprint) writes a custom flash-attention JVP kernel instead.
* diffusers ``AttnProcessor2_0`` / ``AttnProcessor`` (UNet2DModel's ``Attention``,
  ``DiTTransformer2DModel``'s ``BasicTransformerBlock``) call SDPA or plain matmul-softmax, so they
  work under :func:`math_sdpa`; ``AttnProcessor`` (no SDPA) works without it.

:func:`trigflow_jvp` therefore runs inside :func:`math_sdpa` (``force_math=True``, the default).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from onestep.core.denoiser import DenoiserBase
from onestep.core.noise import Trig
from onestep.core.objectives.scm import trigflow_consistency

__all__ = ["TrigFlowStudent", "math_sdpa", "trigflow_jvp"]


@contextmanager
def math_sdpa() -> Iterator[None]:
    """Force the math SDPA backend (the one with forward-mode AD) inside the block."""
    with sdpa_kernel(SDPBackend.MATH):
        yield


def _tensor_out(out: Any) -> Tensor:
    """A diffusers ``*Output`` (``.sample``) or a tuple becomes its first tensor."""
    if torch.is_tensor(out):
        return out
    if hasattr(out, "sample"):
        return out.sample
    if isinstance(out, tuple) and out and torch.is_tensor(out[0]):
        return out[0]
    raise TypeError(f"network returned {type(out).__name__}; expected a tensor or a .sample")


class TrigFlowStudent(DenoiserBase):
    """``F_theta(x / sigma_d, c_noise(tau))`` and ``f(x_t, t)`` of sCM (eq. 6).

    As a Denoiser (``forward(x_t, t, cond) -> x0`` with ``t`` in [0, 1]) it is the consistency
    function ``f = cos(tau) x_t - sin(tau) sigma_d F`` with ``tau = t pi/2``, so every onestep
    sampler, export and metric accepts it.

    Args:
        net: network called ``net(x, c_noise)`` or ``net(x, c_noise, cond)`` (keyword
            ``cond_kwarg`` for diffusers models, e.g. ``class_labels``).
        sigma_d: data standard deviation of the TrigFlow process.
        time_scale: ``c_noise(tau) = time_scale * tau`` (paper: 1 for its UNets, 1000 for DiTs).
        cond_kwarg: pass ``cond`` by this keyword instead of positionally.
    """

    def __init__(
        self,
        net: nn.Module,
        sigma_d: float = 0.5,
        time_scale: float = 1.0,
        cond_kwarg: str | None = None,
    ):
        super().__init__()
        if sigma_d <= 0:
            raise ValueError(f"sigma_d must be > 0 (0.5 for images in [-1, 1]), got {sigma_d}")
        self.net, self.sigma_d, self.time_scale = net, sigma_d, time_scale
        self.cond_kwarg = cond_kwarg
        self.process = Trig(sigma_d)

    def F(self, x_t: Tensor, tau: Tensor, cond: Any = None) -> Tensor:
        """Raw output ``F_theta(x_t / sigma_d, c_noise(tau))``; ``tau`` ``[B]`` in radians."""
        c_noise = self.time_scale * tau
        x_in = x_t / self.sigma_d
        if cond is None:
            return _tensor_out(self.net(x_in, c_noise))
        if self.cond_kwarg is not None:
            return _tensor_out(self.net(x_in, c_noise, **{self.cond_kwarg: cond}))
        return _tensor_out(self.net(x_in, c_noise, cond))

    def consistency(self, x_t: Tensor, tau: Tensor, cond: Any = None) -> Tensor:
        """``f(x_t, tau)`` with the angle ``tau`` in radians."""
        return trigflow_consistency(x_t, self.F(x_t, tau, cond), tau, self.sigma_d)

    def forward(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """``f(x_t, t)`` for ``t`` in [0, 1] (``tau = t pi/2``); ``f(x, 0) = x`` exactly."""
        t = torch.as_tensor(t, device=x_t.device, dtype=x_t.dtype).reshape(-1)
        return self.consistency(x_t, t.expand(x_t.shape[0]) * (math.pi / 2), cond)


def trigflow_jvp(
    F: Callable[[Tensor, Tensor], Tensor],
    x_t: Tensor,
    tau: Tensor,
    dxdt: Tensor,
    force_math: bool = True,
) -> tuple[Tensor, Tensor]:
    """``F(x_t, tau)`` and its total derivative ``dF/dtau = d_x F . dx/dtau + d_tau F``.

    One forward-mode pass (``torch.func.jvp``) along the tangent ``(dx/dtau, 1)``. Call it under
    ``torch.no_grad()`` for the stop-gradient ``F-`` of sCM.

    Args:
        F: ``(x_t, tau) -> [B, ...]``, e.g. ``lambda x, tau: student.F(x, tau, cond)``.
        x_t: noisy sample ``[B, ...]``.
        tau: angle ``[B]``.
        dxdt: ``dx_t/dtau``, same shape as ``x_t``.
        force_math: run inside :func:`math_sdpa` (needed for every network with SDPA attention).

    Returns:
        ``(F, dF/dtau)``, both shaped like ``x_t``.
    """
    if dxdt.shape != x_t.shape:
        raise ValueError(f"dxdt must match x_t {tuple(x_t.shape)}, got {tuple(dxdt.shape)}")
    with math_sdpa() if force_math else nullcontext():
        result = torch.func.jvp(F, (x_t, tau), (dxdt, torch.ones_like(tau)))
    return result[0], result[1]

"""Discriminator networks for the adversarial terms (not pure functions: these hold weights).

* :class:`DenoiserFeatureHead`: DMD2's design (Yin et al. 2024b, sec. 4.3): a small
  classification head reading an intermediate feature map of the **fake score** network, so the
  discriminator shares the fake score's backbone and costs one extra tiny head.
* :class:`SmallDiscriminator`: a standalone MLP (``[B, D]`` data) or convolutional patch
  discriminator (``[B, C, H, W]``), optionally conditioned on the diffusion time.

Both return logits: ``[B]``, or ``[B, ...]`` per patch; the losses in
:mod:`onestep.core.objectives.adversarial` average patch logits per sample.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["DenoiserFeatureHead", "SmallDiscriminator", "time_features"]


def time_features(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal features ``[sin(f t), cos(f t)]`` of ``t`` ``[B]``, ``f`` geometric in [1, 1000].

    (Vaswani et al. 2017, sec. 3.5); returns ``[B, dim]`` (``dim`` even).
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"time feature size must be an even number >= 2, got {dim}")
    freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), dim // 2, device=t.device))
    angle = t.reshape(-1, 1).to(freqs.dtype) * freqs  # (B, dim / 2)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


class DenoiserFeatureHead(nn.Module):
    """Classification head on an intermediate feature map of the fake-score network (DMD2).

    A forward hook on the submodule named ``layer`` of ``denoiser_net`` keeps its latest output.
    So the method runs the fake score once on ``x_t`` (getting its ``x0`` prediction for the
    distribution-matching or denoising loss) and then calls this head for the logits, without a
    second backbone pass. The backbone is **shared with the fake score**: it is not registered as
    a submodule here, so its parameters are not counted twice in optimizers or checkpoints; put
    the head's parameters into the fake score's optimizer (DMD2 trains both with the GAN
    discriminator loss). Captured features keep their graph, so the generator's GAN loss reaches
    the student through the backbone's input. Copying the backbone (e.g. ``deepcopy``) also copies
    the hook and this head; call :meth:`remove` first if that is unwanted.

    The head is pointwise over positions: for features ``[B, C, *spatial]`` it applies
    ``Linear(C, hidden) - SiLU - Linear(hidden, 1)`` at every position (a 1x1 convolution, any
    number of spatial dims), giving patch logits ``[B, *spatial]``, averaged to ``[B]`` unless
    ``patch=True``. Features ``[B, C]`` (MLP backbones) give ``[B]``.

    Two ways to call it: ``head()`` reuses the features of the backbone's latest forward (no
    extra pass: run the fake score on ``x_t`` first); ``head(x_t, t, cond)`` runs the backbone
    itself (``denoiser_net(x_t, t)`` or ``denoiser_net(x_t, t, cond)``), which matches the
    ``discriminator(x_t, t, cond) -> [B]`` convention of the methods when ``denoiser_net`` is the
    fake score's :class:`~onestep.core.denoiser.Denoiser`.

    Args:
        denoiser_net: the fake score's :class:`~onestep.core.denoiser.Denoiser` (or its network).
        layer: dotted name of the submodule whose output is read (see ``named_modules()``);
            a tuple output uses its first element.
        channels: channel count ``C`` of that output (dim 1).
        hidden: width of the head.
        patch: return per-position logits instead of their mean.
    """

    def __init__(
        self,
        denoiser_net: nn.Module,
        layer: str,
        channels: int,
        hidden: int = 64,
        patch: bool = False,
    ):
        super().__init__()
        modules = dict(denoiser_net.named_modules())
        if layer not in modules or layer == "":
            names = [n for n in modules if n][:12]
            raise ValueError(
                f"no submodule {layer!r} in {type(denoiser_net).__name__}; "
                f"pick one of its named_modules(), e.g. {names}"
            )
        self.layer, self.channels, self.patch = layer, channels, patch
        # Tuples, so the shared backbone is not registered as a submodule of the head.
        self._backbone, self._target = (denoiser_net,), (modules[layer],)
        self._handle = modules[layer].register_forward_hook(self._capture)
        self._features: Tensor | None = None
        self.head = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def _capture(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self._features = output[0] if isinstance(output, (tuple, list)) else output

    @property
    def features(self) -> Tensor:
        """The latest output of the hooked layer."""
        if self._features is None:
            raise RuntimeError(
                f"no features captured from layer {self.layer!r} yet; run the fake score's "
                "forward on x_t before asking the head for logits"
            )
        return self._features

    def clear(self) -> None:
        """Drop the captured features (frees their graph)."""
        self._features = None

    def remove(self) -> None:
        """Detach the hook from the backbone; the head stops seeing new features."""
        self._handle.remove()
        self.clear()

    def forward(
        self,
        x_t: Tensor | None = None,
        t: Tensor | None = None,
        cond: Any = None,
        *,
        features: Tensor | None = None,
    ) -> Tensor:
        """Logits for ``x_t`` (running the backbone), given ``features``, or the last capture.

        Args:
            x_t: noisy batch; when given, the backbone runs on ``(x_t, t, cond)`` first.
            t: diffusion times ``[B]`` for the backbone.
            cond: condition for the backbone (``None``: unconditional call).
            features: an explicit feature map ``[B, channels, ...]`` (skips the hook).

        Returns:
            ``[B]``, or ``[B, *spatial]`` with ``patch=True``.
        """
        if x_t is not None:
            net = self._backbone[0]
            if cond is None:
                net(x_t, t)
            else:
                net(x_t, t, cond)
        f = self.features if features is None else features
        if f.ndim < 2 or f.shape[1] != self.channels:
            raise ValueError(
                f"layer {self.layer!r} gave features of shape {tuple(f.shape)}; the head expects "
                f"[B, {self.channels}, ...]; pass channels={f.shape[1] if f.ndim > 1 else '?'}"
            )
        logits = self.head(f.movedim(1, -1)).squeeze(-1)  # (B, *spatial)
        if self.patch or logits.ndim == 1:
            return logits
        return logits.mean(dim=tuple(range(1, logits.ndim)))


class SmallDiscriminator(nn.Module):
    """A standalone discriminator: MLP for ``[B, D]``, convolutional patch net for ``[B, C, H, W]``.

    * ``conv=False``: ``Linear(D, h) - SiLU - Linear(h, h) - SiLU - Linear(h, 1)`` -> ``[B]``.
    * ``conv=True``: two stride-2 ``3x3`` convolutions with SiLU, then a ``1x1`` convolution to one
      channel -> patch logits ``[B, ceil(H/4), ceil(W/4)]`` (PatchGAN style, Isola et al. 2017),
      averaged to ``[B]`` unless ``patch=True``.

    With ``time_conditioning=True`` the sinusoidal features of ``t`` (:func:`time_features`) pass
    through a linear layer and are added to the first hidden layer's activations (per channel for
    the conv net), as in LADD / ADD discriminators conditioned on the noise level.

    Args:
        in_features: ``D`` for the MLP, ``C`` (input channels) for the conv net.
        hidden: width (channels) of the hidden layers.
        conv: build the convolutional patch discriminator.
        time_conditioning: condition on ``t``; ``forward`` then needs ``t``.
        time_embed: size of the time features (even).
        patch: (conv only) return the patch logits instead of their per-sample mean.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int = 64,
        conv: bool = False,
        time_conditioning: bool = False,
        time_embed: int = 16,
        patch: bool = False,
    ):
        super().__init__()
        self.in_features, self.conv, self.time_embed = in_features, conv, time_embed
        self.patch = patch
        if conv:
            self.first: nn.Module = nn.Conv2d(in_features, hidden, 3, stride=2, padding=1)
            self.rest: nn.Module = nn.Sequential(
                nn.SiLU(),
                nn.Conv2d(hidden, hidden, 3, stride=2, padding=1),
                nn.SiLU(),
                nn.Conv2d(hidden, 1, 1),
            )
        else:
            self.first = nn.Linear(in_features, hidden)
            self.rest = nn.Sequential(
                nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1)
            )
        self.time_proj = nn.Linear(time_embed, hidden) if time_conditioning else None

    def _check(self, x: Tensor) -> None:
        want = 4 if self.conv else 2
        if x.ndim != want or x.shape[1] != self.in_features:
            layout = "[B, C, H, W]" if self.conv else "[B, D]"
            raise ValueError(
                f"SmallDiscriminator(conv={self.conv}) expects {layout} with "
                f"{self.in_features} at dim 1, got {tuple(x.shape)}"
            )

    def forward(self, x: Tensor, t: Tensor | None = None, cond: Any = None) -> Tensor:
        """Logits ``[B]`` (``[B, H', W']`` for the conv net with ``patch=True``).

        Args:
            x: the batch to judge.
            t: diffusion times ``[B]``; required with ``time_conditioning``, ignored without.
            cond: accepted for the methods' ``discriminator(x_t, t, cond)`` convention and
                ignored: this discriminator is not class- or text-conditioned.
        """
        self._check(x)
        h = self.first(x)
        if self.time_proj is not None:
            if t is None:
                raise ValueError("this discriminator is time-conditioned; pass t of shape [B]")
            emb = self.time_proj(time_features(t, self.time_embed).to(h.dtype))  # (B, hidden)
            h = h + emb.reshape(*emb.shape, *([1] * (h.ndim - 2)))
        logits = self.rest(h).squeeze(1)  # (B,) or (B, H', W')
        if self.patch or logits.ndim == 1:
            return logits
        return logits.mean(dim=tuple(range(1, logits.ndim)))

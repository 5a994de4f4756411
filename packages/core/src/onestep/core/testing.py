"""Helpers for every package's tests: tiny denoisers, analytic teachers, gradient checks.

Importable as ``onestep.core.testing``; nothing here downloads anything or needs a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor, nn

from onestep.core.data.gmm import GaussianMixture, GMMDenoiser
from onestep.core.denoiser import Denoiser
from onestep.core.noise import NoiseProcess, flow

__all__ = [
    "TinyMLP",
    "TwoTimeMLP",
    "assert_params_changed",
    "assert_params_unchanged",
    "check_domain_cli",
    "gmm_teacher",
    "grad_of",
    "quiet_trainer",
    "snapshot_params",
    "tiny_denoiser",
    "tiny_unet2d",
    "tiny_unet2d_condition",
]


class TinyMLP(nn.Module):
    """A small time-conditioned MLP ``net(x, t, cond=None)`` for ``[B, D]`` data.

    ``t`` (``[B]``, any scale) enters through fixed sinusoidal features ``sin(f t), cos(f t)`` with
    ``time_embed / 2`` frequencies ``f`` spaced geometrically from 1 to 1000 (Vaswani et al. 2017,
    sec. 3.5), which suits both ``t`` in [0, 1] and diffusers' 0..999 timesteps.

    Args:
        dim: data dimension ``D``.
        hidden: width of the two hidden layers.
        time_embed: size of the time features (even).
        cond_dim: size of the condition; 0 for an unconditional net. ``cond`` is a float tensor
            ``[B, cond_dim]`` or long labels ``[B]`` (one-hot encoded; label ``-1`` is the null
            condition, all zeros). ``cond=None`` on a conditional net also means null.
        guidance_dim: size of LCM's w-embedding ``timestep_cond`` ``[B, guidance_dim]`` (see
            :func:`~onestep.core.denoiser.guidance_scale_embedding`); a bias-free linear map
            ``guidance_proj`` adds it to the first hidden layer, as ``time_cond_proj_dim`` adds it
            to a diffusers UNet's time embedding. 0: the net takes no guidance weight.
    """

    freqs: Tensor  # (time_embed / 2,), buffer

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        time_embed: int = 16,
        cond_dim: int = 0,
        guidance_dim: int = 0,
    ):
        super().__init__()
        if time_embed < 2 or time_embed % 2:
            raise ValueError(f"time_embed must be an even number >= 2, got {time_embed}")
        self.dim, self.cond_dim, self.guidance_dim = dim, cond_dim, guidance_dim
        freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), time_embed // 2))
        self.register_buffer("freqs", freqs, persistent=False)
        self.net = nn.Sequential(
            nn.Linear(dim + time_embed + cond_dim, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, dim),
        )
        # Made after ``net`` so that a net without it draws the same initial weights.
        self.guidance_proj = nn.Linear(guidance_dim, hidden, bias=False) if guidance_dim else None

    def _cond(self, cond: Tensor | None, x: Tensor) -> Tensor:
        batch = x.shape[0]
        if cond is None:
            return x.new_zeros(batch, self.cond_dim)
        if not cond.is_floating_point():
            if cond.shape != (batch,) or bool(((cond < -1) | (cond >= self.cond_dim)).any()):
                raise ValueError(
                    f"cond labels must be [B] = [{batch}] in -1..{self.cond_dim - 1}, "
                    f"got shape {tuple(cond.shape)}"
                )
            onehot = x.new_zeros(batch, self.cond_dim + 1)
            # Label -1 lands in the extra last column, which is dropped: the null condition.
            onehot.scatter_(1, cond.long().reshape(batch, 1) % (self.cond_dim + 1), 1.0)
            return onehot[:, : self.cond_dim]
        if cond.shape != (batch, self.cond_dim):
            raise ValueError(f"cond must be [B, {self.cond_dim}], got {tuple(cond.shape)}")
        return cond.to(x)

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        cond: Tensor | None = None,
        timestep_cond: Tensor | None = None,
    ) -> Tensor:
        """Output of shape ``[B, D]``; ``t`` is ``[B]`` (or a scalar)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"TinyMLP expects x of shape [B, {self.dim}], got {tuple(x.shape)}")
        return self.forward_features(x, t, cond, timestep_cond)

    def forward_features(
        self,
        x: Tensor,
        t: Tensor,
        cond: Tensor | None = None,
        timestep_cond: Tensor | None = None,
    ) -> Tensor:
        """:meth:`forward` without the shape check (``x`` may carry extra feature columns)."""
        t = torch.as_tensor(t, device=x.device).to(x.dtype).reshape(-1).expand(x.shape[0])
        angle = t[:, None] * self.freqs.to(x)  # (B, time_embed / 2)
        parts = [x, torch.sin(angle), torch.cos(angle)]
        if self.cond_dim:
            parts.append(self._cond(cond, x))
        elif cond is not None:
            raise ValueError("this TinyMLP is unconditional (cond_dim=0) but got a cond")
        if self.guidance_proj is None:
            if timestep_cond is not None:
                raise ValueError("this TinyMLP takes no guidance weight (guidance_dim=0)")
            return self.net(torch.cat(parts, dim=1))
        if timestep_cond is None:
            raise ValueError(
                f"this TinyMLP takes a guidance weight (guidance_dim={self.guidance_dim}) but got "
                "none; give w through onestep.core.denoiser.with_guidance(cond, w)"
            )
        if timestep_cond.shape != (x.shape[0], self.guidance_dim):
            raise ValueError(
                f"timestep_cond must be [B, {self.guidance_dim}], got {tuple(timestep_cond.shape)}"
            )
        hidden = self.net[0](torch.cat(parts, dim=1)) + self.guidance_proj(timestep_cond.to(x))
        return self.net[1:](hidden)


class TwoTimeMLP(nn.Module):
    """A small MLP ``net(x, t, s, cond=None)`` of two times, for ``[B, D]`` data.

    For the objectives whose network takes a start and an end time: CTM's ``G(x_t, t, s)`` and
    MeanFlow's average velocity ``u(z, r, t)``. Each time enters through the same fixed
    sinusoidal features as :class:`TinyMLP`; everything is smooth, so ``torch.func.jvp`` works.

    Args:
        dim: data dimension ``D``.
        hidden: width of the two hidden layers.
        time_embed: size of each time's features (even).
        cond_dim: size of the condition, as in :class:`TinyMLP`.
    """

    def __init__(self, dim: int, hidden: int = 64, time_embed: int = 16, cond_dim: int = 0):
        super().__init__()
        # One TinyMLP whose "data" is [x, features of s]: its own time input carries t.
        self.dim = dim
        self.inner = TinyMLP(dim + time_embed, hidden, time_embed, cond_dim)
        self.inner.net[-1] = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, t: Tensor, s: Tensor, cond: Tensor | None = None) -> Tensor:
        """Output of shape ``[B, D]``; ``t`` and ``s`` are ``[B]`` (or scalars)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"TwoTimeMLP expects x of shape [B, {self.dim}], got {tuple(x.shape)}")
        s = torch.as_tensor(s, device=x.device).to(x.dtype).reshape(-1).expand(x.shape[0])
        angle = s[:, None] * self.inner.freqs.to(x)
        return self.inner.forward_features(
            torch.cat([x, torch.sin(angle), torch.cos(angle)], dim=1), t, cond
        )


def tiny_denoiser(
    dim: int,
    process: NoiseProcess,
    prediction: str = "x0",
    hidden: int = 64,
    cond_dim: int = 0,
    guidance_dim: int = 0,
) -> Denoiser:
    """A :class:`~onestep.core.denoiser.Denoiser` around a :class:`TinyMLP` (time input ``t``)."""
    net = TinyMLP(dim, hidden=hidden, cond_dim=cond_dim, guidance_dim=guidance_dim)
    return Denoiser(net, process, prediction)


def gmm_teacher(
    preset: str = "ring", process: NoiseProcess | None = None
) -> tuple[GaussianMixture, GMMDenoiser]:
    """A Gaussian mixture and its exact teacher.

    Args:
        preset: ``"ring"`` (8 modes, radius 2), ``"grid"`` (5x5) or ``"unbalanced"`` (a ring
            with geometrically falling weights, heaviest / lightest = 10).
        process: the noise process; default rectified flow (:func:`~onestep.core.noise.flow`).
    """
    presets: dict[str, Callable[[], GaussianMixture]] = {
        "ring": GaussianMixture.ring,
        "grid": GaussianMixture.grid,
        "unbalanced": GaussianMixture.unbalanced_ring,
    }
    if preset not in presets:
        raise ValueError(f"unknown GMM preset {preset!r}; use one of {sorted(presets)}")
    gmm = presets[preset]()
    return gmm, gmm.denoiser(flow() if process is None else process)


def grad_of(loss_fn: Callable[..., Tensor], *tensors: Tensor) -> tuple[Tensor, ...]:
    """Gradient of ``loss_fn(*tensors).sum()`` w.r.t. each tensor (inputs are not modified).

    The tensors are detached clones with ``requires_grad``; a tensor the loss does not depend on
    gets a zero gradient.
    """
    leaves = tuple(t.detach().clone().requires_grad_(True) for t in tensors)
    loss = loss_fn(*leaves).sum()
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    pairs = zip(leaves, grads, strict=True)
    return tuple(torch.zeros_like(x) if g is None else g for x, g in pairs)


def snapshot_params(module: nn.Module, buffers: bool = True) -> dict[str, Tensor]:
    """Detached copies of ``module``'s parameters (and buffers), by name."""
    snap = {f"param:{n}": p.detach().clone() for n, p in module.named_parameters()}
    if buffers:
        snap.update({f"buffer:{n}": b.detach().clone() for n, b in module.named_buffers()})
    return snap


def _changed(module: nn.Module, snapshot: dict[str, Tensor]) -> list[str]:
    buffers = any(k.startswith("buffer:") for k in snapshot)
    now = snapshot_params(module, buffers=buffers)
    if now.keys() != snapshot.keys():
        diff = sorted(now.keys() ^ snapshot.keys())
        raise AssertionError(f"module structure changed since the snapshot: {diff[:5]}")
    return [k for k, v in now.items() if not torch.equal(v, snapshot[k])]


def assert_params_unchanged(module: nn.Module, snapshot: dict[str, Tensor]) -> None:
    """Assert every parameter (and buffer) is bit-identical to ``snapshot``."""
    changed = _changed(module, snapshot)
    if changed:
        now = snapshot_params(module)
        worst = {k: float((now[k].double() - snapshot[k].double()).abs().max()) for k in changed}
        raise AssertionError(f"{len(changed)} tensors changed (max abs change): {worst}")


def assert_params_changed(module: nn.Module, snapshot: dict[str, Tensor]) -> None:
    """Assert at least one parameter differs from ``snapshot`` (the module did train)."""
    if not _changed(module, snapshot):
        raise AssertionError("no parameter changed since the snapshot; was the module updated?")


def check_domain_cli(main: Callable[[list[str]], int], dist: str, planned: str, capsys) -> None:
    """The checks every domain package's console script must pass (``tests/<pkg>/test_cli.py``).

    ``--version`` prints the installed version; ``--help`` lists what exists and what is planned; a
    planned verb exits with status 2 naming where it is tracked; an unknown verb exits with 2.

    Args:
        main: the package's ``cli.main``.
        dist: its distribution name, e.g. ``"onestep-sr"``.
        planned: the text a planned verb's refusal must contain.
        capsys: pytest's ``capsys`` fixture.
    """
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == version(dist)
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "available now" in out and "not yet built" in out
    assert main(["demo"]) == 2
    assert planned in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert "unknown verb" in capsys.readouterr().err


def tiny_unet2d_condition(
    channels: int = 4, cross_attention_dim: int = 8, time_cond_proj_dim: int | None = None
):
    """A Stable-Diffusion-layout ``UNet2DConditionModel``, a few thousand parameters, 8x8 input.

    ``time_cond_proj_dim``: size of LCM's w-embedding input ``timestep_cond`` (``None``: none).
    """
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        time_cond_proj_dim=time_cond_proj_dim,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(4, 8),
        layers_per_block=1,
        norm_num_groups=2,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )


def tiny_unet2d(channels: int = 3, attention: bool = True):
    """A DDPM-layout ``UNet2DModel`` of a few thousand parameters (8x8 input)."""
    from diffusers import UNet2DModel

    down = ("DownBlock2D", "AttnDownBlock2D") if attention else ("DownBlock2D", "DownBlock2D")
    up = ("AttnUpBlock2D", "UpBlock2D") if attention else ("UpBlock2D", "UpBlock2D")
    return UNet2DModel(
        sample_size=8,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(4, 8),
        layers_per_block=1,
        norm_num_groups=2,
        attention_head_dim=4,
        down_block_types=down,
        up_block_types=up,
        add_attention=attention,
    )


class ClosingDDP(DDPStrategy):
    """A DDP strategy that closes its process group when it tears down.

    Lightning destroys the default process group at exit only for NCCL. With gloo, the group's
    destructor otherwise runs during interpreter shutdown, where it sometimes aborts a spawned
    worker (``terminate called without an active exception``) after training has finished.
    Every rank waits at a barrier, then destroys the group itself.
    """

    def teardown(self) -> None:
        """Tear down as DDP does, then close the process group."""
        super().teardown()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def cpu_ddp_spawn(find_unused_parameters: bool = True) -> ClosingDDP:
    """A ``ddp_spawn`` strategy on gloo for CPU tests, closing its process group on teardown."""
    return ClosingDDP(
        start_method="spawn",
        process_group_backend="gloo",
        find_unused_parameters=find_unused_parameters,
    )


def quiet_trainer(**overrides: Any) -> L.Trainer:
    """A CPU, single-device Lightning Trainer with no logger, checkpoints, progress bar or summary.

    Keyword arguments override or add Trainer options (``max_steps``, ``max_epochs``,
    ``default_root_dir``, ``strategy``, ``devices``, ``callbacks`` ...). The defaults are
    ``accelerator="cpu"``, ``devices=1``, ``logger=False``, ``enable_checkpointing=False``,
    ``enable_progress_bar=False`` and ``enable_model_summary=False``.

    Training stops after one epoch (``max_epochs=1``) unless the call gives a stopping condition:
    with ``max_steps``, ``max_epochs`` or ``max_time`` among the overrides no ``max_epochs`` is
    added, so ``quiet_trainer(max_steps=5)`` runs 5 steps however many epochs that takes, as
    ``L.Trainer(max_steps=5)`` does. ``default_root_dir`` is left to Lightning (the working
    directory) unless given; pass ``tmp_path`` where the Trainer may write, e.g. with
    ``enable_checkpointing=True``.
    """
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    if not overrides.keys() & {"max_epochs", "max_steps", "max_time"}:
        options["max_epochs"] = 1
    return L.Trainer(**(options | overrides))

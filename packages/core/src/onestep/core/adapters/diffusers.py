"""Denoisers built from diffusers models loaded from local folders.

Each wrapper is a :class:`~onestep.core.denoiser.Denoiser` whose :meth:`call_net` speaks the
diffusers model's keyword signature; ``.net`` is the diffusers model itself (so LoRA and export
reach it), ``.scheduler`` the scheduler it was read from and ``.pipeline_path`` the pipeline folder
it came from, if any (the default base for :func:`~onestep.core.adapters.export.save_diffusers`).

Supported models and their ``cond``:

=========================  ==========================================================  =========
model                      ``cond``                                                    process
=========================  ==========================================================  =========
``UNet2DModel``            ``None``, or a ``class_labels`` tensor ``[B]``               VP table
``UNet2DConditionModel``   ``encoder_hidden_states`` ``[B, L, D]``, or a dict of its    VP table
                           keyword arguments (``encoder_hidden_states``,
                           ``added_cond_kwargs``, ``class_labels``, ...); with
                           ``time_cond_proj_dim`` (LCM), a guidance weight added by
                           :func:`~onestep.core.denoiser.with_guidance` becomes
                           ``timestep_cond``
``SD3Transformer2DModel``  dict with ``encoder_hidden_states`` ``[B, L, D]`` and        flow
                           ``pooled_projections`` ``[B, P]``
``FluxTransformer2DModel`` dict with ``encoder_hidden_states``, ``pooled_projections``   flow
                           and (guidance-distilled) ``guidance`` ``[B]``; ``x_t`` is
                           the unpacked latent, packed into 2x2 patches inside
``WanTransformer3DModel``  ``encoder_hidden_states`` ``[B, L, D]``, or a dict           flow
=========================  ==========================================================  =========

Folder layouts :func:`load_denoiser` understands: a pipeline folder (``model_index.json`` with a
``unet/`` or ``transformer/`` and a ``scheduler/``), a model folder inside one (its sibling
``scheduler/`` is used), or a bare model folder plus an explicit ``scheduler``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from onestep.core.adapters.folders import (
    MODEL_CONFIG,
    find_scheduler,
    model_folder,
    read_json,
)
from onestep.core.adapters.schedulers import load_scheduler, process_from_scheduler
from onestep.core.denoiser import Denoiser, TimestepFn
from onestep.core.noise import NoiseProcess, VPTable

__all__ = [
    "DENOISER_CLASSES",
    "DiffusersDenoiser",
    "FluxDenoiser",
    "SD3Denoiser",
    "UNet2DConditionDenoiser",
    "UNet2DDenoiser",
    "WanDenoiser",
    "from_flux_transformer",
    "from_sd3_transformer",
    "from_unet2d",
    "from_unet2d_condition",
    "from_wan_transformer",
    "load_denoiser",
    "resolve_model_folder",
]


class DiffusersDenoiser(Denoiser):
    """A Denoiser around a diffusers model, called with keyword arguments.

    Args:
        net: the diffusers model.
        process: the noise process it was trained with.
        prediction: its native prediction (``eps``, ``x0``, ``v``, ``flow`` or diffusers' names).
        timestep: scale (or callable) from ``t`` in [0, 1] to the model's timestep.
        scheduler: the diffusers scheduler the process was read from (kept for export).
        pipeline_path: the local pipeline folder the model came from (kept for export).
    """

    #: diffusers class name this wrapper serves.
    model_class: ClassVar[str] = ""
    #: keyword of the noisy input in ``net.forward``.
    sample_arg: ClassVar[str] = "sample"
    #: keyword a bare-tensor ``cond`` is passed as (``None``: a tensor is not enough).
    tensor_cond: ClassVar[str | None] = None
    #: keywords a dict ``cond`` must hold.
    required: ClassVar[tuple[str, ...]] = ()
    #: the model's own time scale, overriding the scheduler's (``None``: use the scheduler's).
    native_timestep: ClassVar[float | None] = None

    def __init__(
        self,
        net: nn.Module,
        process: NoiseProcess,
        prediction: str,
        timestep: float | TimestepFn,
        *,
        scheduler: Any = None,
        pipeline_path: str | Path | None = None,
    ):
        super().__init__(net, process, prediction, timestep)
        self.scheduler = scheduler
        self.pipeline_path = None if pipeline_path is None else Path(pipeline_path)

    def net_kwargs(self, cond: Any) -> dict[str, Any]:
        """Map ``cond`` to the model's keyword arguments, checking them against its signature."""
        if cond is None:
            kwargs: dict[str, Any] = {}
        elif torch.is_tensor(cond):
            if self.tensor_cond is None:
                raise ValueError(
                    f"{type(self).__name__} needs cond as a dict with keys {self.required}, "
                    "not a bare tensor"
                )
            kwargs = {self.tensor_cond: cond}
        elif isinstance(cond, Mapping):
            kwargs = dict(cond)
        else:
            raise TypeError(
                f"{type(self).__name__}: cond must be None, a tensor or a dict of "
                f"{self.model_class} keyword arguments, got {type(cond).__name__}"
            )
        missing = [k for k in self.required if k not in kwargs]
        if missing:
            raise ValueError(f"{type(self).__name__}: cond lacks {missing} (needs {self.required})")
        accepted = inspect.signature(self.net.forward).parameters
        unknown = [k for k in kwargs if k not in accepted]
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: {type(self.net).__name__}.forward takes no {unknown}; "
                f"valid keys: {[k for k in accepted if k != self.sample_arg]}"
            )
        return kwargs

    def call_net_guided(
        self, x_t: Tensor, timestep: Tensor, cond: Any, timestep_cond: Tensor
    ) -> Tensor:
        """:meth:`call_net` with ``timestep_cond`` (LCM's w-embedding) among the keywords."""
        kwargs = self.net_kwargs(cond)
        if "timestep_cond" in kwargs:
            raise ValueError(
                f"{type(self).__name__}: cond gives both a guidance weight and timestep_cond"
            )
        return self.call_net(x_t, timestep, {**kwargs, "timestep_cond": timestep_cond})

    def call_net(self, x_t: Tensor, timestep: Tensor, cond: Any = None) -> Tensor:
        """``net(<sample_arg>=x_t, timestep=timestep, **cond)``, the first output."""
        kwargs = self.net_kwargs(cond)
        kwargs[self.sample_arg] = x_t
        return self.net(timestep=timestep, return_dict=False, **kwargs)[0]


class UNet2DDenoiser(DiffusersDenoiser):
    """``UNet2DModel`` (DDPM-style); ``cond`` is ``None`` or ``class_labels`` ``[B]``."""

    model_class = "UNet2DModel"
    tensor_cond = "class_labels"


class UNet2DConditionDenoiser(DiffusersDenoiser):
    """``UNet2DConditionModel`` (Stable Diffusion layout); ``cond``: text embeddings or a dict."""

    model_class = "UNet2DConditionModel"
    tensor_cond = "encoder_hidden_states"
    required = ("encoder_hidden_states",)


class SD3Denoiser(DiffusersDenoiser):
    """``SD3Transformer2DModel`` (MM-DiT, Esser et al. 2024); ``cond`` is a dict."""

    model_class = "SD3Transformer2DModel"
    sample_arg = "hidden_states"
    required = ("encoder_hidden_states", "pooled_projections")


class WanDenoiser(DiffusersDenoiser):
    """``WanTransformer3DModel`` (video DiT); ``x_t`` is ``[B, C, F, H, W]``."""

    model_class = "WanTransformer3DModel"
    sample_arg = "hidden_states"
    tensor_cond = "encoder_hidden_states"
    required = ("encoder_hidden_states",)


class FluxDenoiser(DiffusersDenoiser):
    """``FluxTransformer2DModel``; ``x_t`` is the unpacked latent ``[B, C, H, W]`` (H, W even).

    The model sees 2x2 patches packed into a sequence ``[B, H W / 4, 4 C]`` with position ids
    ``(0, row, col)``, as ``FluxPipeline`` packs them; ``call_net`` packs and unpacks, and builds
    ``img_ids`` and all-zero ``txt_ids`` unless ``cond`` gives them. ``cond`` is a dict with
    ``encoder_hidden_states`` ``[B, L, D]``, ``pooled_projections`` ``[B, P]`` and, for
    guidance-distilled checkpoints, ``guidance`` ``[B]`` (the guidance scale). Flux takes the
    time as the flow ``sigma`` itself (it multiplies by 1000 inside), so ``timestep`` is 1.
    """

    model_class = "FluxTransformer2DModel"
    sample_arg = "hidden_states"
    required = ("encoder_hidden_states", "pooled_projections")
    native_timestep = 1.0

    def call_net(self, x_t: Tensor, timestep: Tensor, cond: Any = None) -> Tensor:
        """Pack ``x_t`` into 2x2 patches, run the transformer, unpack its output."""
        b, c, h, w = x_t.shape
        if h % 2 or w % 2:
            raise ValueError(f"FluxDenoiser needs even latent height and width, got {h}x{w}")
        kwargs = self.net_kwargs(cond)
        # (B, C, H, W) -> (B, H/2 * W/2, C * 4), as FluxPipeline._pack_latents.
        packed = x_t.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        kwargs["hidden_states"] = packed.reshape(b, (h // 2) * (w // 2), c * 4)
        if "img_ids" not in kwargs:
            rows = torch.arange(h // 2, device=x_t.device).repeat_interleave(w // 2)
            cols = torch.arange(w // 2, device=x_t.device).repeat(h // 2)
            ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1)
            kwargs["img_ids"] = ids.to(x_t.dtype)
        if "txt_ids" not in kwargs:
            length = kwargs["encoder_hidden_states"].shape[1]
            kwargs["txt_ids"] = x_t.new_zeros(length, 3)
        out = self.net(timestep=timestep, return_dict=False, **kwargs)[0]
        # (B, H/2 * W/2, C_out * 4) -> (B, C_out, H, W), as FluxPipeline._unpack_latents.
        out = out.view(b, h // 2, w // 2, -1, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(b, -1, h, w)


#: diffusers class name -> wrapper, the dispatch table of :func:`load_denoiser`.
DENOISER_CLASSES: dict[str, type[DiffusersDenoiser]] = {
    cls.model_class: cls
    for cls in (UNet2DDenoiser, UNet2DConditionDenoiser, SD3Denoiser, FluxDenoiser, WanDenoiser)
}


def resolve_model_folder(
    path: str | Path, subfolder: str | None = None
) -> tuple[Path, Path | None]:
    """Find the model folder and its pipeline folder (if any) for a local path.

    Args:
        path: a pipeline folder (with ``model_index.json``) or a model folder (with
            ``config.json``).
        subfolder: the model's folder inside ``path`` (e.g. ``"unet"``); when ``None``, the first
            component of ``model_index.json`` whose class is in :data:`DENOISER_CLASSES`.

    Returns:
        ``(model_folder, pipeline_folder_or_None)``.
    """
    return model_folder(path, subfolder, DENOISER_CLASSES)


def _model_class(name: str) -> type[nn.Module]:
    import diffusers

    return getattr(diffusers, name)


# ---------------------------------------------------------------------------------------------
# Constructors


def _settings(
    scheduler: Any,
    process: NoiseProcess | None,
    prediction: str | None,
    timestep: float | TimestepFn | None,
    what: str,
) -> tuple[Any, NoiseProcess, str, float | TimestepFn]:
    """Process, prediction and timestep from a scheduler or from explicit arguments."""
    if scheduler is not None:
        if isinstance(scheduler, (str, Path)):
            scheduler = load_scheduler(scheduler)
        proc, pred, scale = process_from_scheduler(scheduler)
        return (
            scheduler,
            process or proc,
            prediction or pred,
            scale if timestep is None else timestep,
        )
    if process is None or prediction is None:
        raise ValueError(
            f"{what}: no scheduler found; pass scheduler=<folder or instance>, or process= and "
            "prediction= (and timestep=) explicitly"
        )
    if timestep is None:
        if not isinstance(process, VPTable):
            raise ValueError(f"{what}: pass timestep= (the network's time scale) for {process!r}")
        timestep = float(process.num_train_timesteps - 1)
    return None, process, prediction, timestep


def _build(
    cls: type[DiffusersDenoiser],
    model_or_path: nn.Module | str | Path,
    scheduler: Any = None,
    *,
    process: NoiseProcess | None = None,
    prediction: str | None = None,
    timestep: float | TimestepFn | None = None,
    subfolder: str | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> DiffusersDenoiser:
    pipeline = None
    if isinstance(model_or_path, nn.Module):
        net = model_or_path
    else:
        folder, pipeline = resolve_model_folder(model_or_path, subfolder)
        name = read_json(folder / MODEL_CONFIG).get("_class_name")
        if name != cls.model_class:
            raise ValueError(
                f"{folder} holds a {name}, not a {cls.model_class}; use load_denoiser() to detect "
                "the class"
            )
        net = _model_class(cls.model_class).from_pretrained(str(folder), torch_dtype=dtype)  # type: ignore[attr-defined]
        if scheduler is None and process is None:
            scheduler = find_scheduler(folder, pipeline)
    if type(net).__name__ != cls.model_class:
        raise TypeError(f"{cls.__name__} wraps a {cls.model_class}, got {type(net).__name__}")
    if device is not None or (dtype is not None and isinstance(model_or_path, nn.Module)):
        net = net.to(device=device, dtype=dtype)
    if timestep is None and cls.native_timestep is not None:
        timestep = cls.native_timestep
    sched, proc, pred, scale = _settings(scheduler, process, prediction, timestep, cls.__name__)
    return cls(net, proc, pred, scale, scheduler=sched, pipeline_path=pipeline)


def from_unet2d(
    model_or_path: nn.Module | str | Path, scheduler: Any = None, **kwargs: Any
) -> DiffusersDenoiser:
    """Wrap a ``UNet2DModel`` (DDPM-style pipeline or bare model folder, or an instance).

    Args:
        model_or_path: the model, a pipeline folder (``unet/`` + ``scheduler/``) or a model folder.
        scheduler: a scheduler instance or folder; found next to the model when ``None``.
        **kwargs: ``process``, ``prediction``, ``timestep`` (instead of a scheduler), ``subfolder``,
            ``dtype``, ``device``.
    """
    return _build(UNet2DDenoiser, model_or_path, scheduler, **kwargs)


def from_unet2d_condition(
    model_or_path: nn.Module | str | Path, scheduler: Any = None, **kwargs: Any
) -> DiffusersDenoiser:
    """Wrap a ``UNet2DConditionModel`` (Stable Diffusion); arguments as :func:`from_unet2d`."""
    return _build(UNet2DConditionDenoiser, model_or_path, scheduler, **kwargs)


def from_sd3_transformer(
    model_or_path: nn.Module | str | Path, scheduler: Any = None, **kwargs: Any
) -> DiffusersDenoiser:
    """Wrap an ``SD3Transformer2DModel`` (flow matching); arguments as :func:`from_unet2d`."""
    return _build(SD3Denoiser, model_or_path, scheduler, **kwargs)


def from_flux_transformer(
    model_or_path: nn.Module | str | Path, scheduler: Any = None, **kwargs: Any
) -> DiffusersDenoiser:
    """Wrap a ``FluxTransformer2DModel`` (flow matching); arguments as :func:`from_unet2d`."""
    return _build(FluxDenoiser, model_or_path, scheduler, **kwargs)


def from_wan_transformer(
    model_or_path: nn.Module | str | Path, scheduler: Any = None, **kwargs: Any
) -> DiffusersDenoiser:
    """Wrap a ``WanTransformer3DModel`` (flow matching video); arguments as :func:`from_unet2d`."""
    return _build(WanDenoiser, model_or_path, scheduler, **kwargs)


def load_denoiser(
    path: str | Path,
    *,
    subfolder: str | None = None,
    scheduler: Any = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> DiffusersDenoiser:
    """Load a Denoiser from a local diffusers folder, detecting the model class.

    The class comes from the model's ``config.json`` (``_class_name``, see
    :data:`DENOISER_CLASSES`); the process, prediction and timestep scale from the pipeline's
    ``scheduler/`` folder (see :func:`~onestep.core.adapters.schedulers.process_from_scheduler`).

    Args:
        path: a pipeline folder, or a model folder (bare or inside a pipeline).
        subfolder: the model's folder inside ``path``; detected from ``model_index.json`` when
            ``None``.
        scheduler: a scheduler instance or folder, for a bare model folder.
        dtype: load the weights in this dtype (e.g. ``torch.bfloat16``).
        device: move the model here.

    Raises:
        FileNotFoundError: if ``path`` (or its config) does not exist; hub ids are not fetched.
        ValueError: for an unsupported model class, or when no scheduler can be found.
    """
    folder, _ = resolve_model_folder(path, subfolder)
    name = read_json(folder / MODEL_CONFIG).get("_class_name")
    if name not in DENOISER_CLASSES:
        raise ValueError(
            f"{folder / MODEL_CONFIG} names {name!r}; load_denoiser supports "
            f"{sorted(DENOISER_CLASSES)} (wrap other models with onestep.core.denoiser.Denoiser)"
        )
    return _build(
        DENOISER_CLASSES[name],
        path,
        scheduler,
        subfolder=subfolder,
        dtype=dtype,
        device=device,
    )

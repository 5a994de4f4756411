"""Adapters between onestep and diffusers: load teachers as Denoisers, export students.

* :func:`load_denoiser` (and the explicit ``from_*`` constructors) build a
  :class:`~onestep.core.denoiser.Denoiser` from a diffusers model in a **local** folder, reading the
  noise process, native prediction and timestep scale from its scheduler
  (:func:`process_from_scheduler`).
* :func:`save_diffusers` writes a student back into a folder the matching diffusers pipeline
  class loads.
"""

from onestep.core.adapters.diffusers import (
    DENOISER_CLASSES,
    DiffusersDenoiser,
    FluxDenoiser,
    SD3Denoiser,
    UNet2DConditionDenoiser,
    UNet2DDenoiser,
    WanDenoiser,
    from_flux_transformer,
    from_sd3_transformer,
    from_unet2d,
    from_unet2d_condition,
    from_wan_transformer,
    load_denoiser,
    resolve_model_folder,
)
from onestep.core.adapters.export import save_diffusers
from onestep.core.adapters.schedulers import load_scheduler, process_from_scheduler

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
    "load_scheduler",
    "process_from_scheduler",
    "resolve_model_folder",
    "save_diffusers",
]

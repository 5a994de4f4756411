"""Read a diffusers scheduler as a noise process, a native prediction and a timestep scale.

Two families cover the diffusers models onestep adapts:

* **DDPM family** (``DDPMScheduler``, ``DDIMScheduler``, ``EulerDiscreteScheduler``, ...; every
  scheduler with an ``alphas_cumprod`` table): the variance-preserving process
  ``noise.vp(alphas_cumprod)`` (Ho et al. 2020, eq. 4), whose training step ``k`` of ``N`` sits at
  ``t = k / (N - 1)``; the network's timestep is ``t * (N - 1)``.
* **Flow matching** (``FlowMatchEulerDiscreteScheduler`` of SD3 / Flux, or any scheduler with
  ``prediction_type="flow_prediction"`` such as Wan's ``UniPCMultistepScheduler``): the rectified
  flow ``x_t = (1 - t) x0 + t eps`` (Esser et al. 2024, eq. 3) with ``t`` the scheduler's
  ``sigma``; the network's timestep is ``t * num_train_timesteps``. Inference-time ``shift``
  only reparametrises the sampling grid, not the process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from onestep.core import noise
from onestep.core.noise import NoiseProcess

__all__ = ["load_scheduler", "process_from_scheduler"]

SCHEDULER_CONFIG = "scheduler_config.json"
_VP_PREDICTIONS = ("epsilon", "sample", "v_prediction")


def load_scheduler(path: str | Path) -> Any:
    """Load a diffusers scheduler from a local folder holding ``scheduler_config.json``.

    Args:
        path: the scheduler folder (e.g. ``<pipeline>/scheduler``).

    Returns:
        The scheduler instance, of the class named in its config (``_class_name``).

    Raises:
        FileNotFoundError: if the folder or its config does not exist.
        ValueError: if the config names no diffusers scheduler class.
    """
    import diffusers

    folder = Path(path)
    config_file = folder / SCHEDULER_CONFIG
    if not config_file.is_file():
        raise FileNotFoundError(
            f"no {SCHEDULER_CONFIG} in {folder}; pass the scheduler folder of a local diffusers "
            "pipeline (hub ids are not supported) or a scheduler instance"
        )
    name = json.loads(config_file.read_text()).get("_class_name")
    cls = getattr(diffusers, str(name), None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ValueError(f"{config_file} names {name!r}, which is not a diffusers scheduler class")
    return cls.from_pretrained(str(folder))


def _is_flow(scheduler: Any) -> bool:
    config = scheduler.config
    return (
        type(scheduler).__name__.startswith("FlowMatch")
        or config.get("prediction_type") == "flow_prediction"
        or bool(config.get("use_flow_sigmas", False))
    )


def process_from_scheduler(scheduler: Any) -> tuple[NoiseProcess, str, float]:
    """The noise process, native prediction and timestep scale a diffusers scheduler implies.

    Args:
        scheduler: a diffusers scheduler instance, or the path of a local scheduler folder.

    Returns:
        ``(process, prediction, timestep_scale)``: ``prediction`` in onestep's names
        (``eps``/``x0``/``v``/``flow``) and ``timestep_scale`` such that the network's timestep is
        ``t * timestep_scale`` (``N - 1`` for DDPM tables, ``num_train_timesteps`` for flow).

    Raises:
        ValueError: for a scheduler of neither family (e.g. EDM-style ``EDMEulerScheduler``, whose
            networks expect preconditioned inputs: wrap those with :class:`Denoiser` by hand), or
            an unknown ``prediction_type``.
    """
    if isinstance(scheduler, (str, Path)):
        scheduler = load_scheduler(scheduler)
    name = type(scheduler).__name__
    config = scheduler.config
    if _is_flow(scheduler):
        return noise.flow(), "flow", float(config["num_train_timesteps"])
    table = getattr(scheduler, "alphas_cumprod", None)
    if table is None:
        raise ValueError(
            f"cannot read a noise process from {name}: it has neither an alphas_cumprod table nor "
            "flow-matching sigmas; build onestep.core.denoiser.Denoiser(net, process, ...) by hand"
        )
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in _VP_PREDICTIONS:
        raise ValueError(
            f"{name}.config.prediction_type={prediction!r} is not one of {_VP_PREDICTIONS}; "
            "fix the scheduler config"
        )
    process = noise.vp(table)
    alias = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}[prediction]
    return process, alias, float(len(table) - 1)

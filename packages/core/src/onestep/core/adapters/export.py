"""Write a distilled student back into a diffusers folder its pipeline class loads.

* ``UNet2DModel`` without a base pipeline: a fresh ``DDPMPipeline`` folder (``DDIMPipeline`` for a
  ``DDIMScheduler``): ``unet/`` + ``scheduler/`` + ``model_index.json``.
* Any model with a base pipeline (the teacher's folder): the folder is copied and the component
  whose class matches the student (``unet/``, ``transformer/``) is replaced by the student's
  weights (safetensors); with ``scheduler=`` the ``scheduler/`` folder is replaced too. Text
  encoders, tokenizers and VAE come along unchanged, so ``<Pipeline>.from_pretrained(out_dir)``
  works as it did for the teacher.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from onestep.core.adapters.diffusers import DiffusersDenoiser
from onestep.core.adapters.folders import MODEL_INDEX
from onestep.core.adapters.schedulers import load_scheduler
from onestep.core.denoiser import Denoiser
from onestep.core.lora import has_lora

__all__ = ["save_diffusers"]


def _unwrap(model_or_denoiser: nn.Module) -> tuple[nn.Module, Any, Path | None]:
    """The diffusers model, plus the scheduler and pipeline folder a DiffusersDenoiser remembers."""
    if isinstance(model_or_denoiser, DiffusersDenoiser):
        d = model_or_denoiser
        return d.net, d.scheduler, d.pipeline_path
    if isinstance(model_or_denoiser, Denoiser):
        return model_or_denoiser.net, None, None
    return model_or_denoiser, None, None


def _check_saveable(net: nn.Module) -> None:
    if not hasattr(net, "save_pretrained"):
        raise TypeError(
            f"save_diffusers needs a diffusers model (or a Denoiser around one), got "
            f"{type(net).__name__}"
        )
    if has_lora(net):
        raise ValueError(
            f"{type(net).__name__} still holds LoRA layers; call "
            "onestep.core.lora.merge_lora(model) first (or keep the adapter with save_lora)"
        )


def _component(index: dict[str, Any], class_name: str, base: Path) -> str:
    names = [k for k, v in index.items() if isinstance(v, list) and v[-1] == class_name]
    if len(names) != 1:
        raise ValueError(
            f"{base / MODEL_INDEX} has {len(names)} components of class {class_name} ({names}); "
            "export needs exactly one to replace"
        )
    return names[0]


def _prepare_out(out: Path, base: Path | None) -> None:
    if base is not None and out.resolve() == base.resolve():
        raise ValueError(f"out_dir {out} is the base pipeline itself; pick a new folder")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"out_dir {out} exists and is not empty; pick a new or empty folder")


def _fresh_unet_pipeline(net: nn.Module, scheduler: Any, out: Path) -> None:
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline

    if scheduler is None:
        raise ValueError(
            "exporting a UNet2DModel without base_pipeline needs scheduler= (instance or folder)"
        )
    pipeline_cls = DDIMPipeline if isinstance(scheduler, DDIMScheduler) else DDPMPipeline
    pipeline = pipeline_cls(unet=net, scheduler=scheduler)  # pyright: ignore[reportArgumentType]
    pipeline.save_pretrained(str(out), safe_serialization=True)


def save_diffusers(
    model_or_denoiser: nn.Module,
    out_dir: str | Path,
    *,
    base_pipeline: str | Path | None = None,
    scheduler: Any = None,
) -> Path:
    """Export a student as a diffusers pipeline folder.

    Args:
        model_or_denoiser: the student: a diffusers model or a Denoiser around one (LoRA merged).
        out_dir: a new (or empty) folder.
        base_pipeline: the teacher's pipeline folder to copy; defaults to the folder a
            :class:`~onestep.core.adapters.diffusers.DiffusersDenoiser` was loaded from. Required
            for every model but ``UNet2DModel`` (text encoders and VAE live there).
        scheduler: a scheduler instance or folder to ship instead of the base's (e.g. one set up
            for one-step sampling); defaults to the base's, or for a fresh ``UNet2DModel`` pipeline
            to the Denoiser's.

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        ValueError: if the model still holds LoRA layers, or no base pipeline / scheduler is
            available where one is needed.
        FileExistsError: if ``out_dir`` is not empty.
    """
    net, own_scheduler, own_pipeline = _unwrap(model_or_denoiser)
    _check_saveable(net)
    if isinstance(scheduler, (str, Path)):
        scheduler = load_scheduler(scheduler)
    base = Path(base_pipeline) if base_pipeline is not None else own_pipeline
    out = Path(out_dir)
    _prepare_out(out, base)
    class_name = type(net).__name__
    if base is None:
        if class_name != "UNet2DModel":
            raise ValueError(
                f"exporting a {class_name} needs base_pipeline= (the teacher's pipeline folder, "
                "which holds its text encoders and VAE); for a bare model use net.save_pretrained"
            )
        _fresh_unet_pipeline(net, scheduler or own_scheduler, out)
        return out
    if not (base / MODEL_INDEX).is_file():
        raise FileNotFoundError(
            f"base_pipeline {base} has no {MODEL_INDEX}; pass a pipeline folder"
        )
    index = json.loads((base / MODEL_INDEX).read_text())
    component = _component(index, class_name, base)
    # Copy everything but the component being replaced (only at the top level).
    shutil.copytree(
        base, out, dirs_exist_ok=True, ignore=lambda d, _: [component] if Path(d) == base else []
    )
    net.save_pretrained(str(out / component), safe_serialization=True)  # type: ignore[attr-defined]
    if scheduler is not None:
        _replace_scheduler(out, index, scheduler)
    return out


def _replace_scheduler(out: Path, index: dict[str, Any], scheduler: Any) -> None:
    """Swap ``scheduler/`` and record its class in ``model_index.json`` (pipelines load by it)."""
    shutil.rmtree(out / "scheduler", ignore_errors=True)
    scheduler.save_pretrained(str(out / "scheduler"))
    index["scheduler"] = ["diffusers", type(scheduler).__name__]
    (out / MODEL_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

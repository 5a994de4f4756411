"""Export a trained SD one-step student as a diffusers folder, and load it back.

The folder is a ``StableDiffusionPipeline`` folder (``model_index.json``, ``unet/``, ``vae/``,
``scheduler/``, plus ``text_encoder/`` and ``tokenizer/`` when the resolver has them) whose UNet
and VAE encoder carry the merged LoRA weights (``W + (alpha / r) B A``, so no peft is needed to run
it), and ``onestep_sr.json`` with what the one-step SR call needs besides the weights::

    {"format": "onestep-sr/sd-one-step", "version": 1, "scale": 4, "timestep": 999, "prompt": ""}

A resolver without a text encoder also writes its unconditional embedding to
``empty_prompt.safetensors``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from onestep.core.lora import has_lora, merge_lora
from onestep.sr.sd.folder import load_sd_folder
from onestep.sr.sd.prompts import PromptEncoder
from onestep.sr.sd.student import SDOneStepStudent, SDSuperResolver

__all__ = ["FORMAT", "FORMAT_VERSION", "META_NAME", "export_sd_student", "load_sd_student"]

META_NAME = "onestep_sr.json"
FORMAT = "onestep-sr/sd-one-step"
FORMAT_VERSION = 1
EMPTY_PROMPT_NAME = "empty_prompt.safetensors"


def _merged_copy(model: Any) -> Any:
    """A copy of ``model`` with its LoRA folded in (the resolver keeps its adapters)."""
    model = copy.deepcopy(model)
    return merge_lora(model) if has_lora(model) else model


def export_sd_student(resolver: SDSuperResolver, path: str | Path) -> Path:
    """Write ``resolver`` as a diffusers SD folder plus ``onestep_sr.json``.

    The UNet and VAE are copied before merging (peak memory: one extra UNet + VAE), so the
    resolver keeps training with its adapters.

    Args:
        resolver: the SD super-resolver to export.
        path: a new or empty folder.

    Returns:
        ``path`` as a ``Path``; :func:`load_sd_student` reads it back, and
        ``StableDiffusionPipeline.from_pretrained`` loads it when it has a text encoder.

    Raises:
        FileExistsError: if ``path`` exists and is not empty.
    """
    from diffusers import StableDiffusionPipeline

    out = Path(path)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; export into a new or empty folder")
    student, prompts = resolver.student, resolver.prompts
    pipe = StableDiffusionPipeline(
        vae=_merged_copy(student.vae),
        text_encoder=prompts.text_encoder,
        tokenizer=prompts.tokenizer,
        unet=_merged_copy(student.unet),
        scheduler=student.denoiser.scheduler,
        safety_checker=None,  # pyright: ignore[reportArgumentType]
        feature_extractor=None,  # pyright: ignore[reportArgumentType]
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out), safe_serialization=True)
    if not prompts.has_text_encoder:
        empty = prompts.empty().detach().contiguous().cpu()
        save_file({"empty": empty}, str(out / EMPTY_PROMPT_NAME))
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "scale": resolver.scale,
        "timestep": student.timestep,
        "prompt": resolver.prompt,
    }
    (out / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _read_meta(root: Path) -> dict[str, Any]:
    meta_file = root / META_NAME
    if not meta_file.is_file():
        raise FileNotFoundError(
            f"{root} has no {META_NAME}, so it is not an exported SD one-step student; write one "
            "with onestep.sr.sd.export_sd_student(resolver, path) (a plain Stable Diffusion folder "
            "loads with load_sd_folder + SDOneStepStudent)"
        )
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != FORMAT or int(meta.get("version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"{meta_file} has format {meta.get('format')!r} version {meta.get('version')!r}; this "
            f"onestep-sr reads {FORMAT!r} up to version {FORMAT_VERSION} (upgrade onestep-sr)"
        )
    return meta


def load_sd_student(
    path: str | Path, device: torch.device | str = "cpu", *, dtype: torch.dtype = torch.float32
) -> SDSuperResolver:
    """Load a folder written by :func:`export_sd_student` as a ready-to-run resolver.

    Args:
        path: the exported folder.
        device: where the models go.
        dtype: weight dtype of the UNet, VAE and text encoder.

    Returns:
        The :class:`~onestep.sr.sd.student.SDSuperResolver` in eval mode, every weight frozen
        (the LoRA is merged, no adapters are added).

    Raises:
        FileNotFoundError: if the folder has no ``onestep_sr.json`` (or lacks SD parts).
        ValueError: for an unknown format or a newer format version.
    """
    root = Path(path)
    meta = _read_meta(root)
    parts = load_sd_folder(
        root, dtype=dtype, device=device, text_encoder=(root / "text_encoder").is_dir()
    )
    empty = None
    if (root / EMPTY_PROMPT_NAME).is_file():
        empty = load_file(str(root / EMPTY_PROMPT_NAME))["empty"].to(device=device, dtype=dtype)
    student = SDOneStepStudent(parts, timestep=int(meta["timestep"]), lora=False)
    prompts = PromptEncoder(parts.text_encoder, parts.tokenizer, empty=empty)
    resolver = SDSuperResolver(student, prompts, scale=int(meta["scale"]), prompt=meta["prompt"])
    return resolver.eval()

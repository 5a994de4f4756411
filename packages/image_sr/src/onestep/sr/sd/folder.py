"""Load the parts of a local Stable Diffusion folder (SD 2.1-base / SD-Turbo layout).

The folder is what ``hf download stabilityai/stable-diffusion-2-1-base --local-dir <folder>``
(or ``stabilityai/sd-turbo``) writes, or :func:`~onestep.sr.sd.tiny.write_tiny_sd_folder`::

    model_index.json  unet/  vae/  scheduler/  text_encoder/  tokenizer/

Only local files are read (``local_files_only=True``); nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from onestep.core.adapters.folders import MODEL_INDEX, read_json
from onestep.core.adapters.schedulers import load_scheduler

__all__ = ["SD_LAYOUT", "SDParts", "load_sd_folder"]

#: the sub-folders of a Stable Diffusion pipeline folder that onestep-sr reads.
SD_LAYOUT: tuple[str, ...] = ("unet", "vae", "scheduler", "text_encoder", "tokenizer")
_LAYOUT_HELP = (
    f"expected a local diffusers Stable Diffusion folder ({MODEL_INDEX} + "
    f"{', '.join(n + '/' for n in SD_LAYOUT)}), as written by `hf download "
    "stabilityai/stable-diffusion-2-1-base --local-dir <folder>` or "
    "onestep.sr.sd.write_tiny_sd_folder"
)
# Fallback classes when model_index.json does not name them (SD 1.x / 2.x and SD-Turbo use these).
_TEXT_CLASSES = {"text_encoder": "CLIPTextModel", "tokenizer": "CLIPTokenizer"}


@dataclass
class SDParts:
    """The components of a Stable Diffusion pipeline, loaded.

    Attributes:
        unet: the ``UNet2DConditionModel``.
        vae: the ``AutoencoderKL``.
        scheduler: the training scheduler; its ``alphas_cumprod`` and ``prediction_type`` define
            the noise process (see ``onestep.core.adapters.schedulers.process_from_scheduler``).
        text_encoder: the CLIP text encoder, or ``None`` when not loaded.
        tokenizer: its tokenizer, or ``None`` when not loaded.
        path: the folder the parts came from, if any.
    """

    unet: Any
    vae: Any
    scheduler: Any
    text_encoder: Any = None
    tokenizer: Any = None
    path: Path | None = None


def _check_layout(root: Path, parts: tuple[str, ...]) -> dict[str, Any]:
    """``model_index.json`` of ``root``, after checking every sub-folder in ``parts`` exists."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"Stable Diffusion folder {str(root)!r} does not exist; {_LAYOUT_HELP}"
        )
    if not (root / MODEL_INDEX).is_file():
        raise FileNotFoundError(f"{root} has no {MODEL_INDEX}; {_LAYOUT_HELP}")
    missing = [name for name in parts if not (root / name).is_dir()]
    if missing:
        hint = (
            " (pass text_encoder=False to skip the text encoder and tokenizer)"
            if set(missing) <= set(_TEXT_CLASSES)
            else ""
        )
        raise FileNotFoundError(
            f"{root} lacks {', '.join(m + '/' for m in missing)}{hint}; {_LAYOUT_HELP}"
        )
    return read_json(root / MODEL_INDEX)


def _transformers_class(index: dict[str, Any], name: str) -> Any:
    import transformers

    entry = index.get(name)
    class_name = entry[-1] if isinstance(entry, list) and entry[-1] else _TEXT_CLASSES[name]
    cls = getattr(transformers, str(class_name), None)
    if cls is None:
        raise ValueError(
            f"{MODEL_INDEX} names {class_name!r} for {name}/, which transformers does not provide"
        )
    return cls


def load_sd_folder(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    text_encoder: bool = True,
) -> SDParts:
    """Load UNet, VAE, scheduler and (optionally) the text encoder of a local SD folder.

    Args:
        path: the pipeline folder (see the module docstring for the layout).
        dtype: weights of the UNet, VAE and text encoder in this dtype.
        device: move the models here.
        text_encoder: load ``text_encoder/`` and ``tokenizer/`` too; ``False`` for a run that
            only needs precomputed prompt embeddings.

    Returns:
        The :class:`SDParts`, every model in eval mode with its weights as stored (nothing frozen
        or adapted yet).

    Raises:
        FileNotFoundError: if the folder, its ``model_index.json`` or a needed sub-folder is
            missing; the message names it and the expected layout.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    root = Path(path)
    needed = SD_LAYOUT if text_encoder else tuple(n for n in SD_LAYOUT if n not in _TEXT_CLASSES)
    index = _check_layout(root, needed)
    kwargs = {"torch_dtype": dtype, "local_files_only": True}
    unet = UNet2DConditionModel.from_pretrained(str(root), subfolder="unet", **kwargs)
    vae = AutoencoderKL.from_pretrained(str(root), subfolder="vae", **kwargs)
    parts = SDParts(
        unet=unet.to(device),  # pyright: ignore[reportArgumentType]
        vae=vae.to(device),  # pyright: ignore[reportArgumentType]
        scheduler=load_scheduler(root / "scheduler"),
        path=root,
    )
    if text_encoder:
        encoder_cls = _transformers_class(index, "text_encoder")
        tokenizer_cls = _transformers_class(index, "tokenizer")
        parts.text_encoder = encoder_cls.from_pretrained(
            str(root), subfolder="text_encoder", dtype=dtype, local_files_only=True
        ).to(device)
        parts.tokenizer = tokenizer_cls.from_pretrained(
            str(root), subfolder="tokenizer", local_files_only=True
        )
    return parts

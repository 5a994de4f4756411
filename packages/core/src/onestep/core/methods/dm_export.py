"""Export a trained student: a safetensors state dict, or a diffusers folder for diffusers nets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

__all__ = ["export_student", "is_diffusers_student"]


def is_diffusers_student(student: nn.Module) -> bool:
    """Whether ``student`` is (or wraps, as ``.net``) a diffusers model."""
    net = getattr(student, "net", student)
    return hasattr(net, "save_pretrained") and hasattr(net, "config")


def export_student(student: nn.Module, path: str | Path, **diffusers_kwargs: Any) -> Path:
    """Write ``student`` for inference.

    Args:
        student: the student module (a Denoiser, or any ``nn.Module``).
        path: for a diffusers student, a new or empty folder (written with
            :func:`onestep.core.adapters.save_diffusers`); otherwise a ``*.safetensors`` file, or a
            folder that receives ``student.safetensors``.
        **diffusers_kwargs: ``base_pipeline`` / ``scheduler`` for ``save_diffusers``.

    Returns:
        The folder or file written.
    """
    out = Path(path)
    if is_diffusers_student(student):
        from onestep.core.adapters import save_diffusers

        return save_diffusers(student, out, **diffusers_kwargs)
    if diffusers_kwargs:
        raise ValueError(
            f"{sorted(diffusers_kwargs)} only apply to diffusers students, "
            f"not {type(student).__name__}"
        )
    if out.suffix != ".safetensors":
        out.mkdir(parents=True, exist_ok=True)
        out = out / "student.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    # Contiguous clones: safetensors refuses shared or strided storage.
    state = {k: v.detach().contiguous().clone() for k, v in student.state_dict().items()}
    save_file(state, str(out))
    return out

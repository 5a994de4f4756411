"""Save and reload the demo's one-step student: ``student.safetensors`` + ``student.json``."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from onestep.core.demo.teacher import TeacherConfig, build_denoiser
from onestep.core.denoiser import Denoiser

__all__ = ["load_student", "save_student"]


def save_student(folder: Path, student: Denoiser, config: TeacherConfig, extra: dict) -> None:
    """Write the student network's weights and the config needed to rebuild it."""
    state = {k: v.detach().cpu().contiguous() for k, v in student.net.state_dict().items()}
    save_file(state, str(folder / "student.safetensors"))
    meta = {
        "network": "onestep.core.demo.networks.DigitsDenoiserNet",
        "size": config.size,
        "width": config.width,
        "depth": config.depth,
        "process": "flow",
        "prediction": "flow",
        "timestep_scale": 1000.0,
        "sample": "x0 = student(z, t=1), z ~ N(0, I) of shape [B, 1, size, size]",
        **extra,
    }
    (folder / "student.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_student(folder: Path | str, device: str | torch.device = "cpu") -> Denoiser:
    """Rebuild a student saved by :func:`save_student` (eval mode, gradients off)."""
    folder = Path(folder)
    meta = json.loads((folder / "student.json").read_text())
    config = TeacherConfig(size=meta["size"], width=meta["width"], depth=meta["depth"])
    student = build_denoiser(config)
    student.net.load_state_dict(load_file(str(folder / "student.safetensors")))
    return student.to(device).eval().requires_grad_(False)

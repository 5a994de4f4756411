"""Builders that read saved networks when a config is instantiated (``class_path`` targets).

A distillation config names its frozen teacher as a folder::

    teacher:
      class_path: onestep.sr.models.loading.load_teacher_denoiser
      init_args: {path: runs/sr_teacher/tiny, process: flow}

The folder is read when the model is built, not when the config is parsed, so ``--print_config``
works before the teacher exists.
"""

from __future__ import annotations

import json
from pathlib import Path

from onestep.core.denoiser import Denoiser
from onestep.sr.models.teacher import build_denoiser
from onestep.sr.models.unet import ConditionalUNet

__all__ = ["load_teacher_denoiser"]

# Written by onestep.sr.model_folder.save_resolver next to the network; it records the process.
_MODEL_META = "onestep_sr.json"


def load_teacher_denoiser(path: str, process: str = "flow") -> Denoiser:
    """The frozen SR teacher ``D(x_t, t, z_L) -> x0`` from a saved :class:`ConditionalUNet`.

    Reads a folder written by ``SRTeacher.save_teacher`` or by
    :func:`onestep.sr.model_folder.save_resolver` (whose ``onestep_sr.json`` records the process
    and is checked against ``process``).

    Args:
        path: the folder.
        process: the noise process the teacher was trained with (``SRTeacher``'s ``process``:
            ``flow`` or ``vp``).

    Returns:
        The teacher's Denoiser in eval mode, every weight frozen.

    Raises:
        FileNotFoundError: no folder at ``path``, or not a saved ``ConditionalUNet``.
        ValueError: ``process`` differs from the one the folder records.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(
            f"no SR teacher at {str(root)!r}; train one (onestep-sr fit --config "
            "configs/teacher/tiny.yaml, or onestep.sr.models.teacher.SRTeacher) and write it with "
            "SRTeacher.save_teacher(path), or point teacher.init_args.path at it"
        )
    meta_file = root / _MODEL_META
    if meta_file.is_file():
        saved = json.loads(meta_file.read_text()).get("process")
        if saved is not None and saved != process:
            raise ValueError(
                f"{meta_file} says the teacher was trained with process={saved!r}, but "
                f"process={process!r} was asked for; pass process: {saved}"
            )
    net = ConditionalUNet.load(root).requires_grad_(False).eval()
    return build_denoiser(net, process).requires_grad_(False).eval()

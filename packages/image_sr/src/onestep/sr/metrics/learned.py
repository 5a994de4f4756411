"""Learned quality metrics (LPIPS, DISTS, MUSIQ, CLIP-IQA, MANIQA) from local weight files only.

pyiqa downloads every learned metric's weights on first use; in this project a metric is built
only from files already on disk, and a missing file is reported, never downloaded or faked.
``weights_dir`` may be a flat folder or a torch hub directory that pyiqa has filled before
(``~/.cache/torch/hub``: pyiqa keeps its files in ``pyiqa/``, CLIP in ``clip/``, torchvision in
``checkpoints/``). The files pyiqa 0.1.16 expects for each metric (the basenames of its download
URLs, checked by the tests):

============  ==================================  =============================================
metric        checkpoint (``<dir>`` or            also needed
              ``<dir>/pyiqa``, CLIP: ``<dir>/clip``)
============  ==================================  =============================================
``lpips``     ``LPIPS_v0.1_alex-df73285e.pth``    ``checkpoints/alexnet-owt-7be5be79.pth``
``dists``     ``DISTS_weights-f5e65c96.pth``      ``checkpoints/vgg16-397923af.pth``
``musiq``     ``musiq_koniq_ckpt-e95806b9.pth``   --
``clipiqa``   ``RN50.pt`` (OpenAI CLIP ResNet-50)  --
``maniqa``    ``ckpt_koniq10k.pt``                --
============  ==================================  =============================================

How each reaches pyiqa: ``lpips``, ``dists``, ``musiq`` through its ``pretrained_model_path``
argument; ``clipiqa`` through ``backbone=<path to RN50.pt>`` (pyiqa's CLIP loader accepts a file
path; CLIP-IQA's prompts are fixed text, it has no other weights); ``maniqa`` is built with
``pretrained=False`` and its checkpoint loaded strictly afterwards (the checkpoint holds the whole
ViT, so the ImageNet ViT that pyiqa would fetch through timm is not requested). The ``lpips`` and
``dists`` backbones are torchvision ImageNet weights that pyiqa's code always asks torchvision for;
torchvision looks in ``<torch hub dir>/checkpoints``, so ``<dir>/checkpoints/<file>`` is used by
pointing the torch hub directory at ``<dir>`` while the metric is built (the user's own torch hub
cache also counts). Caveat: pyiqa loads the LPIPS and DISTS checkpoints with ``strict=False``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import torch
from torch import Tensor

__all__ = ["LEARNED_WEIGHTS", "LearnedWeights", "MissingWeightsError", "build_learned"]


@dataclass(frozen=True)
class LearnedWeights:
    """The local files one learned metric needs.

    Attributes:
        checkpoint: pyiqa's (or CLIP's) file name, looked up in ``weights_dir`` then in
            ``weights_dir/<cache_subdir>``.
        cache_subdir: where pyiqa's own cache keeps it under a torch hub directory.
        backbone: torchvision ImageNet weights the metric also loads, looked up in
            ``weights_dir/checkpoints`` then in the torch hub cache; ``None`` if none.
    """

    checkpoint: str
    cache_subdir: str = "pyiqa"
    backbone: str | None = None


LEARNED_WEIGHTS: dict[str, LearnedWeights] = {
    "lpips": LearnedWeights("LPIPS_v0.1_alex-df73285e.pth", backbone="alexnet-owt-7be5be79.pth"),
    "dists": LearnedWeights("DISTS_weights-f5e65c96.pth", backbone="vgg16-397923af.pth"),
    "musiq": LearnedWeights("musiq_koniq_ckpt-e95806b9.pth"),
    "clipiqa": LearnedWeights("RN50.pt", cache_subdir="clip"),
    "maniqa": LearnedWeights("ckpt_koniq10k.pt"),
}


class MissingWeightsError(Exception):
    """A learned metric's weight file is not on disk; the message names the expected file."""


def _locate(name: str, weights_dir: str | Path | None) -> tuple[Path, Path | None]:
    """The checkpoint path and the hub directory to use for the backbone (None: the default)."""
    spec = LEARNED_WEIGHTS[name]
    needs = f"{spec.checkpoint} (or {spec.cache_subdir}/{spec.checkpoint})" + (
        f" and checkpoints/{spec.backbone}" if spec.backbone else ""
    )
    if weights_dir is None:
        raise MissingWeightsError(f"no weights_dir given; {name} needs {needs}")
    root = Path(weights_dir)
    candidates = [root / spec.checkpoint, root / spec.cache_subdir / spec.checkpoint]
    checkpoint = next((p for p in candidates if p.is_file()), None)
    if checkpoint is None:
        raise MissingWeightsError(f"no weights for {name} in {root}: expected {needs}")
    if spec.backbone is None:
        return checkpoint, None
    if (root / "checkpoints" / spec.backbone).is_file():
        return checkpoint, root
    if (Path(torch.hub.get_dir()) / "checkpoints" / spec.backbone).is_file():
        return checkpoint, None
    raise MissingWeightsError(
        f"no weights for {name}'s torchvision backbone: expected "
        f"{root / 'checkpoints' / spec.backbone} (or in {torch.hub.get_dir()}/checkpoints)"
    )


@contextmanager
def _torch_hub_dir(path: Path) -> Iterator[None]:
    """Point torch hub (where torchvision looks for weights) at ``path``, then restore it."""
    previous = getattr(torch.hub, "_hub_dir", None)  # None: derived from $TORCH_HOME
    torch.hub.set_dir(str(path))
    try:
        yield
    finally:
        torch.hub._hub_dir = previous  # pyright: ignore[reportAttributeAccessIssue]


def _build_maniqa(checkpoint: Path, device: str | torch.device) -> torch.nn.Module:
    import pyiqa
    from pyiqa.archs import maniqa_arch
    from pyiqa.archs.arch_util import clean_state_dict

    create_model = maniqa_arch.timm.create_model

    def no_download(model_name: str, pretrained: bool = False, **kwargs: Any) -> Any:
        return create_model(model_name, pretrained=False, **kwargs)

    with mock.patch.object(maniqa_arch, "timm", SimpleNamespace(create_model=no_download)):
        metric = pyiqa.create_metric("maniqa", device=device, pretrained=False)
    # pyiqa stores its own files under "params"; MANIQA's released checkpoint is a bare state dict.
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = state.get("params", state)
    metric.net.load_state_dict(clean_state_dict(state), strict=True)
    return metric


def build_learned(
    name: str, weights_dir: str | Path | None, device: str | torch.device, as_loss: bool = False
) -> Callable[..., Tensor]:
    """Build pyiqa's ``name`` from local files only; returns ``f(sr[, hr]) -> [B]``.

    ``as_loss=True`` keeps the graph (pyiqa's loss mode), for LPIPS as a training loss.

    Raises:
        MissingWeightsError: a file is missing (the message names it).
        RuntimeError: the files are there but pyiqa cannot build the metric from them.
    """
    checkpoint, hub_dir = _locate(name, weights_dir)
    import pyiqa  # lazy: seconds to import

    try:
        with _torch_hub_dir(hub_dir) if hub_dir is not None else nullcontext():
            if name == "clipiqa":
                metric = pyiqa.create_metric(name, device=device, backbone=str(checkpoint))
            elif name == "maniqa":
                metric = _build_maniqa(checkpoint, device)
            else:
                metric = pyiqa.create_metric(
                    name, device=device, pretrained_model_path=str(checkpoint), as_loss=as_loss
                )
    except Exception as err:
        raise RuntimeError(f"could not build {name} from {checkpoint}: {err}") from err

    def compute(sr: Tensor, hr: Tensor | None = None) -> Tensor:
        score = metric(sr) if hr is None else metric(sr, hr)
        return score.reshape(sr.shape[0])

    return compute

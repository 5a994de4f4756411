"""Train (or load from the user cache) the classifier that supplies Frechet-distance features.

The features are the 64-d penultimate layer of
:class:`~onestep.core.demo.networks.DigitsClassifier`, trained on the training split only, so
held-out digits measure how far unseen real data sits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from onestep.core.demo import _cache, networks

__all__ = ["ClassifierConfig", "accuracy", "load_or_train_classifier", "train_classifier"]


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything that determines the classifier's weights (the cache key hashes it).

    Args:
        size: image side.
        feature_dim: width of the penultimate (feature) layer.
        steps: training iterations.
        batch_size: images per iteration.
        lr: Adam learning rate.
        noise_std: std of the Gaussian noise added to training images, so features stay smooth
            on generated digits that are slightly off the data.
        seed: seed of initialisation, batches and augmentation.
    """

    size: int = 8
    feature_dim: int = 64
    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    noise_std: float = 0.1
    seed: int = 0


def train_classifier(
    net: networks.DigitsClassifier,
    images: Tensor,
    labels: Tensor,
    config: ClassifierConfig,
    progress: bool = True,
) -> None:
    """Train ``net`` in place with cross-entropy on noisy copies of ``images``."""
    gen = torch.Generator(device=images.device).manual_seed(config.seed)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(config.steps, 1))
    net.train()
    for _ in tqdm(range(config.steps), desc="classifier", disable=not progress, leave=False):
        idx = torch.randint(images.shape[0], (config.batch_size,), generator=gen, device=gen.device)
        x = images[idx]
        x = x + config.noise_std * torch.randn(x.shape, generator=gen, device=x.device)
        loss = F.cross_entropy(net(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()


@torch.no_grad()
def accuracy(net: networks.DigitsClassifier, images: Tensor, labels: Tensor) -> float:
    """Share of ``images`` classified as ``labels``."""
    return float((net(images).argmax(1) == labels).float().mean())


def load_or_train_classifier(
    config: ClassifierConfig,
    images: Tensor,
    labels: Tensor,
    *,
    retrain: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[networks.DigitsClassifier, bool]:
    """The frozen feature network for ``config``: from the user cache, or trained now and cached.

    Returns:
        ``(classifier, from_cache)``, in eval mode with gradients off.
    """
    with torch.random.fork_rng(devices=[]):  # seeded init, global RNG untouched
        torch.manual_seed(config.seed)
        net = networks.DigitsClassifier(size=config.size, feature_dim=config.feature_dim)
    net = net.to(images.device)
    sources = [Path(networks.__file__), Path(__file__)]

    def train(_: torch.nn.Module) -> None:
        train_classifier(net, images, labels, config, progress=progress)

    from_cache = _cache.load_or_train(
        "classifier", asdict(config), sources, net, train, retrain=retrain, log=log
    )
    return net.eval().requires_grad_(False), from_cache

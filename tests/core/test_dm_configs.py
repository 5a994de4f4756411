"""Every shipped DistributionMatching config parses and trains through ``onestep fit --config``."""

from __future__ import annotations

import warnings
from importlib.resources import files
from pathlib import Path

import pytest
import torch

from onestep.core.cli import run_lightning
from onestep.core.methods import DIVERGENCES, DistributionMatching

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")
warnings.filterwarnings("ignore", ".*LightningCLI's args parameter.*")

CONFIG_DIR = Path(str(files("onestep.core") / "configs" / "distribution_matching"))
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def test_every_divergence_has_a_tiny_config():
    names = {p.stem for p in CONFIGS}
    assert set(DIVERGENCES) <= names, sorted(set(DIVERGENCES) - names)


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_fits(config: Path, tmp_path):
    cli = run_lightning(
        ["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path)]
    )
    model = cli.model
    assert isinstance(model, DistributionMatching)
    assert model.iteration == cli.datamodule.num_batches  # pyright: ignore[reportAttributeAccessIssue]
    metrics = cli.trainer.callback_metrics
    for key in ("loss/student", "loss/fake_score", "health/fake_fit", "health/dm_grad_norm"):
        assert torch.isfinite(metrics[key]), (config.stem, key, metrics.get(key))
    if config.stem.startswith("fdiv") or "gan" in config.stem:
        assert "loss/discriminator" in metrics

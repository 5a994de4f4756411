"""Every shipped sCM config parses and trains through ``onestep fit --config``."""

from __future__ import annotations

import warnings
from importlib.resources import files
from pathlib import Path

import pytest
import torch

from onestep.core.cli import run_lightning
from onestep.core.methods.scm import ContinuousConsistency

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")
warnings.filterwarnings("ignore", ".*LightningCLI's args parameter.*")

CONFIG_DIR = Path(str(files("onestep.core") / "configs" / "scm"))
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def test_both_modes_have_a_config():
    assert {p.stem for p in CONFIGS} >= {"scd", "sct"}


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_fits(config: Path, tmp_path):
    cli = run_lightning(
        ["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path)]
    )
    model = cli.model
    assert isinstance(model, ContinuousConsistency)
    assert model.hparams["mode"] == config.stem
    assert model.iteration == cli.datamodule.num_batches  # pyright: ignore[reportAttributeAccessIssue]
    metrics = cli.trainer.callback_metrics
    for key in ("loss/student", "grad_norm/student", "health/tangent_norm", "health/residual"):
        assert torch.isfinite(metrics[key]), (config.stem, key, metrics.get(key))

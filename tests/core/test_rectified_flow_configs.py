"""Every shipped RectifiedFlow config parses and trains through ``onestep fit --config``."""

from __future__ import annotations

import warnings
from importlib.resources import files
from pathlib import Path

import pytest
import torch

from onestep.core.cli import run_lightning
from onestep.core.methods.rectified_flow import RectifiedFlow

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")
warnings.filterwarnings("ignore", ".*LightningCLI's args parameter.*")

CONFIG_DIR = Path(str(files("onestep.core") / "configs" / "rectified_flow"))
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
MODES = {
    "flow_matching": "flow_matching",
    "reflow": "reflow",
    "kd": "distill",
    "instaflow": "distill",
}


def test_every_mode_has_a_tiny_config():
    assert {p.stem for p in CONFIGS} == set(MODES)


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_fits(config: Path, tmp_path):
    cli = run_lightning(
        ["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path)]
    )
    model = cli.model
    assert isinstance(model, RectifiedFlow)
    assert model.hparams["mode"] == MODES[config.stem]
    assert cli.trainer.global_step == 20
    metrics = cli.trainer.callback_metrics
    for key in ("loss/student", "health/one_step_error", "grad_norm/student"):
        assert torch.isfinite(metrics[key]), (config.stem, key, metrics.get(key))

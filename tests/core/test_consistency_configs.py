"""Every shipped consistency config parses and trains through ``onestep fit --config``."""

from __future__ import annotations

import warnings
from importlib.resources import files
from pathlib import Path

import pytest
import torch

from onestep.core.cli import run_lightning
from onestep.core.methods.consistency import ConsistencyDistillation

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")
warnings.filterwarnings("ignore", ".*LightningCLI's args parameter.*")

CONFIG_DIR = Path(str(files("onestep.core") / "configs" / "consistency"))
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def test_every_family_member_has_a_tiny_config():
    assert {p.stem for p in CONFIGS} >= {"cd", "lcm", "lcm_lora", "ct", "ict", "tscd"}


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_fits(config: Path, tmp_path):
    cli = run_lightning(
        ["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path)]
    )
    model = cli.model
    assert isinstance(model, ConsistencyDistillation)
    assert cli.trainer.global_step == cli.datamodule.num_batches  # pyright: ignore[reportAttributeAccessIssue]
    metrics = cli.trainer.callback_metrics
    for key in ("loss/student", "health/ema_gap", "health/num_scales"):
        assert torch.isfinite(metrics[key]), (config.stem, key, metrics.get(key))
    if config.stem == "ict":
        assert metrics["health/num_scales"] > 10  # the curriculum grew N
    if config.stem == "tscd":
        assert metrics["health/segments"] == 1  # progressive schedule ended at one segment

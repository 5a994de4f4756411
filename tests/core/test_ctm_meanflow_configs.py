"""Every shipped CTM and MeanFlow config parses and trains through ``onestep fit --config``."""

from __future__ import annotations

import warnings
from importlib.resources import files
from pathlib import Path

import pytest
import torch

from onestep.core.cli import run_lightning
from onestep.core.methods.ctm import ConsistencyTrajectory
from onestep.core.methods.meanflow import MeanFlow

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")
warnings.filterwarnings("ignore", ".*LightningCLI's args parameter.*")

ROOT = Path(str(files("onestep.core") / "configs"))
CONFIGS = sorted(ROOT.glob("ctm/*.yaml")) + sorted(ROOT.glob("meanflow/*.yaml"))
KEYS = {
    ConsistencyTrajectory: ("loss/ctm", "loss/dsm", "health/target_gap", "grad_norm/student"),
    MeanFlow: ("loss/student", "health/mse", "grad_norm/student"),
}


def test_configs_exist():
    assert {p.parent.name for p in CONFIGS} == {"ctm", "meanflow"}


@pytest.mark.parametrize("config", CONFIGS, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIGS])
def test_config_fits(config: Path, tmp_path):
    cli = run_lightning(
        ["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path)]
    )
    model = cli.model
    cls = ConsistencyTrajectory if config.parent.name == "ctm" else MeanFlow
    assert isinstance(model, cls)
    assert cli.trainer.global_step == cli.datamodule.num_batches  # pyright: ignore[reportAttributeAccessIssue]
    metrics = cli.trainer.callback_metrics
    for key in KEYS[cls]:
        assert torch.isfinite(metrics[key]), (config.stem, key, metrics.get(key))
    teacher = getattr(model, "teacher", None)
    if teacher is not None:
        assert all(not p.requires_grad for p in teacher.parameters())
        assert not teacher.training

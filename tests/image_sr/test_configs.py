"""Every shipped onestep-sr config parses; the tiny ones train through ``onestep-sr fit``.

The teacher config writes a model folder that the OSEDiff config distils and ``upscale`` runs;
the real-scale configs are fitted with a tiny Stable Diffusion folder and CPU overrides.
"""

from __future__ import annotations

import json
import warnings
from importlib.resources import files
from pathlib import Path

import pytest
import torch

from onestep.sr.cli import main, run_sr_lightning
from onestep.sr.model_folder import load_resolver
from onestep.sr.sd import write_tiny_sd_folder

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")

CONFIG_ROOT = Path(str(files("onestep.sr") / "configs"))
CONFIGS = sorted(CONFIG_ROOT.rglob("*.yaml"))
TEACHER_TINY = CONFIG_ROOT / "teacher" / "tiny.yaml"
OSEDIFF_TINY = CONFIG_ROOT / "osediff" / "tiny.yaml"


def _id(path: Path) -> str:
    return str(path.relative_to(CONFIG_ROOT).with_suffix(""))


def test_issue_5_configs_are_shipped():
    assert {_id(p) for p in CONFIGS} >= {
        "teacher/tiny",
        "teacher/latent",
        "osediff/tiny",
        "osediff/sd",
    }


@pytest.mark.parametrize("config", CONFIGS, ids=[_id(p) for p in CONFIGS])
def test_config_parses(config: Path, capsys):
    """Parsing imports every class_path and checks every argument; no file is read yet."""
    with pytest.raises(SystemExit) as done:
        run_sr_lightning(["fit", "--config", str(config), "--print_config"])
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "model:\n  class_path: onestep.sr." in printed
    assert "data:\n  class_path: " in printed


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory where the tiny teacher config has been fitted (runs/ lands here)."""
    root = tmp_path_factory.mktemp("configs")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert main(["fit", "--config", str(TEACHER_TINY)]) == 0
    return root


def test_tiny_teacher_config_fits_and_saves_its_sampler(workdir):
    folder = workdir / "runs" / "sr_teacher" / "tiny"
    meta = json.loads((folder / "onestep_sr.json").read_text())
    assert (meta["kind"], meta["steps"], meta["scale"]) == ("teacher", 4, 4)
    sr = load_resolver(folder)(torch.rand(1, 3, 8, 8))
    assert sr.shape == (1, 3, 32, 32)


def test_tiny_teacher_config_tests(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    assert main(["test", "--config", str(TEACHER_TINY), "--model.init_args.val_steps", "[1]"]) == 0
    table = (workdir / "test" / "metrics.md").read_text()
    assert "psnr SRTeacher 1-step" in table and "| mean" in table


def test_tiny_osediff_config_distils_the_teacher_folder(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    assert main(["fit", "--config", str(OSEDIFF_TINY)]) == 0
    folder = workdir / "runs" / "osediff" / "tiny"
    assert json.loads((folder / "onestep_sr.json").read_text())["kind"] == "student"
    assert load_resolver(folder)(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)


def test_latent_teacher_config_fits_with_a_tiny_vae(tmp_path, monkeypatch):
    sd = write_tiny_sd_folder(tmp_path / "sd")
    monkeypatch.chdir(tmp_path)
    cpu = ["--trainer.accelerator", "cpu", "--trainer.precision", "32", "--trainer.max_steps", "2"]
    cpu += ["--trainer.logger", "false", "--trainer.enable_checkpointing", "false"]
    cpu += ["--trainer.callbacks", "[]", "--trainer.limit_val_batches", "1"]
    small = ["--model.init_args.space.init_args.path", str(sd)]
    small += ["--model.init_args.net.init_args.widths", "[8, 16]"]
    small += ["--model.init_args.net.init_args.groups", "4"]
    small += ["--model.init_args.net.init_args.layers_per_block", "1"]
    small += ["--model.init_args.val_steps", "[1]"]
    data = ["--data.init_args.train_hr", "null", "--data.init_args.degradation", "bicubic"]
    data += ["--data.init_args.crop", "64", "--data.init_args.val_crop", "64"]
    data += ["--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0"]
    cli = run_sr_lightning(
        ["fit", "--config", str(CONFIG_ROOT / "teacher" / "latent.yaml"), *cpu, *small, *data]
    )
    assert cli.trainer.global_step == 2
    assert cli.model.space.factor == 8 and cli.model.multiple == 4
    assert torch.isfinite(cli.trainer.callback_metrics["loss/teacher"])

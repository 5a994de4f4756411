"""The `onestep` umbrella command and OnestepCLI (LightningCLI with shared defaults)."""

import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest

from onestep.core.cli import main

TINY_MODULE = textwrap.dedent(
    '''
    import torch
    from lightning.pytorch import LightningDataModule, LightningModule
    from torch.utils.data import DataLoader, TensorDataset


    class Line(LightningModule):
        """Fits y = 3x; every hyperparameter is a typed __init__ argument."""

        def __init__(self, lr: float = 0.1):
            super().__init__()
            self.save_hyperparameters()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, _):
            x, y = batch
            loss = ((self.w * x - y) ** 2).mean()
            self.log("loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


    class Points(LightningDataModule):
        def __init__(self, n: int = 64):
            super().__init__()
            self.n = n

        def train_dataloader(self):
            x = torch.linspace(-1, 1, self.n)[:, None]
            return DataLoader(TensorDataset(x, 3 * x), batch_size=16)
    '''
)


def test_help_version_and_info(capsys):
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == version("onestep-core")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for dist in ("onestep-core", "onestep-sr", "onestep-rl"):
        assert dist in out


def test_unknown_verb_is_a_clear_error(capsys):
    assert main(["trian"]) == 2
    assert "unknown verb 'trian'" in capsys.readouterr().err


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "onestep"
    out = subprocess.run([str(script), "info"], capture_output=True, text=True, check=True)
    assert "onestep-core" in out.stdout
    bad = subprocess.run([str(script), "nope"], capture_output=True, text=True)
    assert bad.returncode == 2


def test_fit_from_a_config_file(tmp_path, monkeypatch):
    (tmp_path / "tiny_line.py").write_text(TINY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""
            trainer:
              max_epochs: 20
              logger: false
              enable_checkpointing: false
              enable_progress_bar: false
              accelerator: cpu
              default_root_dir: {tmp_path}
            model:
              class_path: tiny_line.Line
              init_args: {{lr: 0.2}}
            data:
              class_path: tiny_line.Points
            """
        )
    )
    from onestep.core.cli import run_lightning

    cli = run_lightning(["fit", "--config", str(cfg)])
    assert cli.model.hparams.lr == 0.2
    assert abs(float(cli.model.w.detach()) - 3.0) < 1e-2
    # Re-running into the same folder is allowed (config.yaml is overwritten, not refused).
    run_lightning(["fit", "--config", str(cfg), "--trainer.max_epochs", "1"])


def test_fit_rejects_a_bad_argument(tmp_path, monkeypatch, capsys):
    (tmp_path / "tiny_line.py").write_text(TINY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    from onestep.core.cli import run_lightning

    with pytest.raises(SystemExit) as err:
        run_lightning(["fit", "--model", "tiny_line.Line", "--model.lr", "fast"])
    assert err.value.code != 0
    assert "lr" in capsys.readouterr().err


def test_bench_verb_is_wired(capsys):
    assert main(["bench", "--help"]) == 0
    assert "--smoke" in capsys.readouterr().out

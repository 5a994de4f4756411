"""``tools/bench/sr_gpu.py``: OSEDiff training on an SD-2.1-shaped random model (issue #5).

The GPU test runs the benchmark as a GPU session would, at 512² with the full-size UNet
(``uv run pytest -m gpu tests/image_sr/test_gpu.py``); the CPU test runs the same script with
narrowed widths at 64², so the script cannot rot where no GPU is lent.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "bench" / "sr_gpu.py"


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("sr_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Snapshot:
    """The module's trainable (LoRA) and frozen weights before training, on the CPU."""

    def __call__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.before = {n: p.detach().cpu().clone() for n, p in module.named_parameters()}
        self.trainable = {n for n, p in module.named_parameters() if p.requires_grad}

    def changed(self) -> set[str]:
        after = dict(self.module.named_parameters())
        return {n for n, p in self.before.items() if not torch.equal(after[n].detach().cpu(), p)}


def _run_and_check(argv: list[str], output: Path) -> dict[str, Any]:
    snapshot = Snapshot()
    report = _script().main([*argv, "--output", str(output)], on_built=snapshot)
    assert json.loads(output.read_text()) == report
    assert report["losses_finite"]
    assert {"loss/fake_score", "loss/student", "loss/vsd"} <= set(report["losses_last"])
    assert all(math.isfinite(v) for v in report["losses_last"].values())
    assert report["it_per_s"] > 0 and report["s_per_it_median"] > 0
    assert report["prompt_embeds"] == [1, 77, 1024]
    assert report["prediction_type"] == "v_prediction"
    assert report["lora_dtype"] == "float32"
    assert snapshot.trainable and all("lora_" in n for n in snapshot.trainable)
    changed = snapshot.changed()
    assert changed <= snapshot.trainable  # the frozen UNets, VAE and text encoder did not move
    assert any(n.startswith("student.") for n in changed)  # the student's LoRA trained
    assert any(n.startswith("fake_score.") for n in changed)  # and the fake score's
    return report


def test_sr_gpu_script_runs_narrowed_on_cpu(tmp_path):
    # Widths narrowed (UNet ~6M, VAE ~5M parameters), the rest as at full size: ~5 s.
    base = ["--device", "cpu", "--size", "64", "--steps", "1", "--warmup", "0"]
    base += ["--vae-scale", "0.25", "--folder", str(tmp_path / "sd")]
    report = _run_and_check([*base, "--unet-scale", "0.05"], tmp_path / "result.json")
    assert report["weights_dtype"] == "bfloat16" and report["precision"] == "bf16-mixed"
    assert report["unet_params"] < 10_000_000
    # The folder is kept for the next run with the same shapes; other shapes refuse it.
    assert (tmp_path / "sd" / "sr_gpu_folder.json").is_file()
    with pytest.raises(FileExistsError, match="other shapes"):
        _script().main([*base, "--unet-scale", "0.1", "--output", str(tmp_path / "no.json")])


def test_sr_gpu_full_unet_config_keeps_sd21_heads():
    script = _script()
    from onestep.sr.sd.tiny import sd21_unet_config

    assert script.unet_config(1.0) == sd21_unet_config()
    narrow = script.unet_config(0.05)
    assert narrow["block_out_channels"] == [64, 64, 64, 64]
    assert narrow["attention_head_dim"] == [1, 1, 1, 1]  # diffusers: heads of 64 channels


@pytest.mark.gpu
def test_sr_gpu_benchmark_at_512_on_cuda(tmp_path):
    report = _run_and_check(
        ["--device", "cuda", "--size", "512", "--steps", "3", "--warmup", "1"],
        tmp_path / "result.json",
    )
    assert report["unet_params"] > 800_000_000  # the SD 2.1-base UNet, not a narrowed one
    assert report["weights_dtype"] == "bfloat16"
    assert report["gpu"] and 0 < report["peak_gib"] <= report["peak_reserved_gib"]

"""The core on a CUDA device (skipped without one; run where a GPU is lent).

Every shipped config trains on the GPU (fp32, and bf16-mixed for one config per family), the
objectives' gradients on the GPU equal the CPU's, and sCM's JVP through attention works on CUDA
under the math SDPA backend. Run: ``uv run pytest -m gpu tests/core/test_gpu.py``.
"""

from __future__ import annotations

import warnings
from importlib.resources import files
from pathlib import Path

import pytest
import torch

from onestep.core.cli import run_lightning
from onestep.core.methods.scm_jvp import TrigFlowStudent, trigflow_jvp
from onestep.core.objectives import dmd_loss, dmd_normalizer, fdiv_weight, sid_loss, sim_loss
from onestep.core.testing import tiny_unet2d

pytestmark = pytest.mark.gpu

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")
warnings.filterwarnings("ignore", ".*LightningCLI's args parameter.*")

CONFIG_ROOT = Path(str(files("onestep.core") / "configs"))
CONFIGS = sorted(CONFIG_ROOT.glob("*/*.yaml"))
# One config per family also runs under bf16 autocast (sCM and MeanFlow take JVPs inside it).
BF16 = ["distribution_matching/dmd2", "consistency/cd", "scm/sct", "ctm/ctm", "meanflow/meanflow"]
BF16 += ["rectified_flow/reflow"]


def _fit(config: Path, root: Path, *extra: str):
    return run_lightning(
        [
            "fit",
            "--config",
            str(config),
            "--trainer.accelerator",
            "gpu",
            "--trainer.devices",
            "1",
            "--trainer.max_steps",
            "6",
            "--trainer.default_root_dir",
            str(root),
            *extra,
        ]
    )


def _check_trained_on_cuda(cli, name: str) -> None:
    # Lightning moves the module back to the CPU when fit ends; the strategy keeps its device.
    assert cli.trainer.strategy.root_device.type == "cuda", name
    assert cli.trainer.global_step > 0, name
    metrics = cli.trainer.callback_metrics
    assert metrics, f"{name}: nothing logged"
    for key, value in metrics.items():
        assert torch.isfinite(value).all(), (name, key, value)


def _name(config: Path) -> str:
    return f"{config.parent.name}/{config.stem}"


@pytest.mark.parametrize("config", CONFIGS, ids=[_name(p) for p in CONFIGS])
def test_config_trains_on_cuda(config: Path, tmp_path):
    _check_trained_on_cuda(_fit(config, tmp_path), _name(config))


@pytest.mark.parametrize("name", BF16)
def test_config_trains_on_cuda_in_bf16(name: str, tmp_path):
    cli = _fit(CONFIG_ROOT / f"{name}.yaml", tmp_path, "--trainer.precision", "bf16-mixed")
    _check_trained_on_cuda(cli, name + " bf16")


def _grads(fn, *tensors):
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    fn(*leaves).sum().backward()
    return [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("objective", ["dmd", "sid", "sim", "fdiv-js"])
def test_objective_gradients_match_cpu(objective: str):
    gen = torch.Generator().manual_seed(0)
    x, real, fake = (torch.randn(8, 3, 16, 16, generator=gen, dtype=torch.float64) for _ in "abc")
    log_r = torch.randn(8, generator=gen, dtype=torch.float64)

    def loss(x, real, fake, log_r):
        if objective == "dmd":
            return dmd_loss(x, real, fake)
        if objective == "sid":
            return sid_loss(x, real, fake, weight=dmd_normalizer(x, real))
        if objective == "sim":
            return sim_loss(x, real, fake, weight=dmd_normalizer(x, real))
        return dmd_loss(x, real, fake, weight=fdiv_weight(log_r, "js"))

    cpu = _grads(loss, x, real, fake, log_r)
    gpu = _grads(loss, *(t.cuda() for t in (x, real, fake, log_r)))
    for a, b in zip(cpu, gpu, strict=True):
        if a is None:
            assert b is None
            continue
        torch.testing.assert_close(b.cpu(), a)
    assert any(g is not None and g.abs().max() > 0 for g in cpu)


def test_scm_jvp_through_attention_on_cuda_matches_float64():
    # Reference in float64 on the GPU too: torch 2.11's CPU forward-mode AD of group_norm fails
    # on the UNet's non-contiguous activations (seen on the GPU machine; fine on torch 2.14).
    torch.manual_seed(0)
    student = TrigFlowStudent(tiny_unet2d(), sigma_d=0.5).cuda()
    x = torch.randn(2, 3, 8, 8, device="cuda")
    tau, v = 0.2 + torch.rand(2, device="cuda"), torch.randn(2, 3, 8, 8, device="cuda")
    with torch.no_grad():
        out, dF = trigflow_jvp(student.F, x, tau, v)
        student = student.double()
        ref_out, ref_dF = trigflow_jvp(student.F, x.double(), tau.double(), v.double())
        h = 1e-4  # central differences along (v, 1) in float64 check the reference itself
        plus = student.F(x.double() + h * v.double(), tau.double() + h)
        minus = student.F(x.double() - h * v.double(), tau.double() - h)
    scale = ref_dF.abs().max().item()
    assert scale > 1e-3
    fd = (plus - minus) / (2 * h)
    torch.testing.assert_close(ref_dF, fd, rtol=1e-4, atol=1e-4 * scale)
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(dF.double(), ref_dF, rtol=1e-3, atol=1e-3 * scale)

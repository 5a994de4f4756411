"""LoRA helpers on a plain MLP and a tiny diffusers UNet2DModel."""

import copy
import json
from typing import Any

import pytest
import torch
from diffusers import UNet2DModel
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file
from torch import nn

from onestep.core.lora import (
    add_lora,
    freeze_all_but_lora,
    has_lora,
    load_lora,
    lora_parameters,
    merge_lora,
    resolve_targets,
    save_lora,
)
from onestep.core.testing import tiny_unet2d, tiny_unet2d_condition


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: intra-op threads only add overhead (seconds per call on a busy 2-core box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class MLP(nn.Module):
    def __init__(self, dim: int = 6, hidden: int = 16):
        super().__init__()
        self.inp = nn.Linear(dim, hidden)
        self.act = nn.SiLU()
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.out(self.act(self.inp(x))) * scale


def tiny_unet(attention: bool = True) -> UNet2DModel:
    torch.manual_seed(0)
    return tiny_unet2d(channels=2, attention=attention)


def _unet_out(unet: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return unet(x, torch.tensor([3.0, 40.0])).sample


def _perturb_lora(model: nn.Module, scale: float = 0.3) -> None:
    """LoRA B starts at zero; give every LoRA weight a non-zero value so the adapter matters."""
    with torch.no_grad():
        for p in lora_parameters(model):
            p.add_(scale * torch.randn_like(p))


def _mlp_case():
    return MLP(), torch.randn(5, 6), lambda m, x: m(x)


def _unet_case():
    return tiny_unet(), torch.randn(2, 2, 8, 8), _unet_out


CASES = {"mlp": _mlp_case, "unet": _unet_case}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fresh_lora_is_identity_then_merge_equals_unmerged(case):
    model, x, run = CASES[case]()
    base_out = run(model, x).detach()
    add_lora(model, rank=2)
    assert has_lora(model)
    torch.testing.assert_close(run(model, x), base_out)  # B = 0 at init

    _perturb_lora(model)
    unmerged = run(model, x).detach()
    assert (unmerged - base_out).abs().max() > 1e-3  # the adapter now changes the output
    merged_model = merge_lora(model)
    assert merged_model is model
    assert not any(isinstance(m, BaseTunerLayer) for m in model.modules())
    assert not any("lora_" in k or "base_layer" in k for k in model.state_dict())
    torch.testing.assert_close(run(model, x), unmerged, rtol=1e-5, atol=1e-5)


def test_plain_module_keeps_class_and_signature():
    model = MLP()
    x = torch.randn(3, 6)
    add_lora(model, rank=2, target_modules="auto")
    assert type(model) is MLP
    assert isinstance(model.inp, BaseTunerLayer) and isinstance(model.out, BaseTunerLayer)
    torch.testing.assert_close(model(x, scale=2.0), 2.0 * model(x))


def test_auto_targets():
    assert resolve_targets(MLP()) == ["inp", "out"]
    unet_targets = resolve_targets(tiny_unet())
    assert unet_targets  # the attention block's projections, nothing else
    assert {name.rsplit(".", 1)[-1] for name in unet_targets} <= {"to_q", "to_k", "to_v", "0"}
    assert sum(name.endswith("to_out.0") for name in unet_targets) == len(unet_targets) // 4


def test_diffusers_model_goes_through_add_adapter_when_available():
    unet = tiny_unet2d_condition(channels=2)
    add_lora(unet, rank=2, adapter_name="student")
    assert unet._hf_peft_config_loaded  # diffusers' own bookkeeping, so its LoRA API works
    assert list(unet.peft_config) == ["student"]
    assert unet.active_adapters() == ["student"]


def test_alpha_scales_the_update():
    # The LoRA branch of one Linear is (alpha / r) B A x (Hu et al. 2022, eq. 3): linear in alpha.
    x = torch.randn(4, 6)
    lin = nn.Linear(6, 3)
    y0 = lin(x).detach()
    deltas = []
    for alpha in (2.0, 4.0):
        m = nn.Sequential(copy.deepcopy(lin))
        torch.manual_seed(1)
        add_lora(m, rank=2, alpha=alpha)
        _perturb_lora(m)
        layer: Any = m[0]
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        torch.testing.assert_close(m(x) - y0, (alpha / 2) * x @ a.T @ b.T)
        deltas.append(m(x).detach() - y0)
    torch.testing.assert_close(deltas[1], 2.0 * deltas[0])


def test_freeze_leaves_only_lora_trainable_and_a_step_moves_only_lora():
    model = MLP(dim=6, hidden=16)
    add_lora(model, rank=3)
    _perturb_lora(model)
    n = freeze_all_but_lora(model)
    assert n == 3 * (6 + 16) + 3 * (16 + 6)  # r (in + out) per adapted Linear
    assert n == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert {id(p) for p in lora_parameters(model)} == {
        id(p) for p in model.parameters() if p.requires_grad
    }

    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(8, 6)).square().mean().backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if "lora_" in k}


def test_freeze_on_unet_counts_lora_params():
    unet = tiny_unet()
    add_lora(unet, rank=2)
    n = freeze_all_but_lora(unet)
    assert 0 < n == sum(p.numel() for p in lora_parameters(unet))
    assert all(("lora_" in k) == p.requires_grad for k, p in unet.named_parameters())


@pytest.mark.parametrize("case", sorted(CASES))
def test_save_load_roundtrip_onto_fresh_base(case, tmp_path):
    model, x, run = CASES[case]()
    fresh = copy.deepcopy(model)
    add_lora(model, rank=2, alpha=3.0)
    _perturb_lora(model)
    expected = run(model, x).detach()

    folder = save_lora(model, tmp_path / "lora")
    weights = load_file(folder / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights)
    assert len(weights) == len(list(lora_parameters(model)))
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == 2 and config["lora_alpha"] == 3.0

    assert not torch.allclose(run(fresh, x), expected)
    load_lora(fresh, folder)
    torch.testing.assert_close(run(fresh, x), expected)


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="rank must be a positive int, got 0"):
        add_lora(MLP(), rank=0)
    with pytest.raises(ValueError, match="rank must be a positive int, got -2"):
        add_lora(MLP(), rank=-2)
    with pytest.raises(ValueError, match="no Linear/Conv layer named like"):
        add_lora(MLP(), target_modules=["to_q"])
    with pytest.raises(ValueError, match="to_q/to_k"):
        add_lora(tiny_unet(attention=False))
    with pytest.raises(ValueError, match="dropout"):
        add_lora(MLP(), dropout=1.0)
    model = add_lora(MLP(), rank=2)
    with pytest.raises(ValueError, match="already has an adapter named 'default'"):
        add_lora(model, rank=2)
    with pytest.raises(ValueError, match="no LoRA layer to merge"):
        merge_lora(MLP())
    with pytest.raises(ValueError, match="call add_lora"):
        freeze_all_but_lora(MLP())
    with pytest.raises(ValueError, match="no LoRA adapter 'other'"):
        save_lora(model, tmp_path / "x", adapter_name="other")
    with pytest.raises(FileNotFoundError, match=r"adapter_model\.safetensors"):
        load_lora(MLP(), tmp_path / "missing")


def test_load_onto_another_architecture_fails(tmp_path):
    model = add_lora(MLP(dim=6, hidden=16), rank=2)
    folder = save_lora(model, tmp_path / "lora")
    with pytest.raises(Exception, match=r"size mismatch|do not fit"):
        load_lora(MLP(dim=6, hidden=8), folder)

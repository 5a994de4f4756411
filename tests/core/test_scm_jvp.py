"""``trigflow_jvp`` against central differences, through a TinyMLP, a UNet2DModel and a DiT.

diffusers computes its sinusoidal timestep embedding in float32 even in a float64 model, so their
differences in ``tau`` carry float32 rounding: those checks use ``h = 1e-3`` and ``rtol = 1e-3``.
"""

from __future__ import annotations

import pytest
import torch

from onestep.core.methods.scm_jvp import TrigFlowStudent, math_sdpa, trigflow_jvp
from onestep.core.testing import TinyMLP, tiny_unet2d


def _central(F, x, tau, v, h: float):
    return (F(x + h * v, tau + h) - F(x - h * v, tau - h)) / (2 * h)


def _check(student: TrigFlowStudent, x: torch.Tensor, h: float, cond=None, rtol: float = 1e-5):
    tau = 0.2 + torch.rand(x.shape[0], dtype=x.dtype)
    v = torch.randn_like(x)

    def F(a, b):
        return student.F(a, b, cond)

    with torch.no_grad():
        out, dF = trigflow_jvp(F, x, tau, v)
        with math_sdpa():
            torch.testing.assert_close(out, F(x, tau))
            fd = _central(F, x, tau, v, h)
    torch.testing.assert_close(dF, fd, rtol=rtol, atol=rtol * fd.abs().max().item())
    assert fd.abs().max() > 1e-3  # the check is not vacuous


def test_jvp_tiny_mlp_matches_central_differences():
    torch.manual_seed(0)
    student = TrigFlowStudent(TinyMLP(3, hidden=16), sigma_d=0.5).double()
    _check(student, torch.randn(4, 3, dtype=torch.float64), h=1e-7)


def test_jvp_unet2d_matches_central_differences_and_needs_math_sdpa():
    torch.manual_seed(0)
    student = TrigFlowStudent(tiny_unet2d(), sigma_d=0.5).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    _check(student, x, h=1e-3, rtol=1e-3)
    # The default CPU kernel (flash attention for CPU) has no forward-AD formula.
    tau, v = torch.rand(2, dtype=torch.float64), torch.randn_like(x)
    with pytest.raises(NotImplementedError, match="forward AD"), torch.no_grad():
        trigflow_jvp(student.F, x, tau, v, force_math=False)


def test_jvp_unet2d_plain_attention_processor_needs_no_math_backend():
    from diffusers.models.attention_processor import Attention, AttnProcessor

    torch.manual_seed(0)
    net = tiny_unet2d()
    layers = [m for m in net.modules() if isinstance(m, Attention)]
    assert layers
    for layer in layers:
        layer.set_processor(AttnProcessor())
    student = TrigFlowStudent(net, sigma_d=0.5).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    tau, v = torch.rand(2, dtype=torch.float64), torch.randn_like(x)
    with torch.no_grad():
        a = trigflow_jvp(student.F, x, tau, v, force_math=False)[1]
        b = trigflow_jvp(student.F, x, tau, v, force_math=True)[1]
    torch.testing.assert_close(a, b)


def test_jvp_dit_transformer_matches_central_differences():
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    dit = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=4,
        in_channels=2,
        out_channels=2,
        num_layers=2,
        sample_size=4,
        patch_size=2,
        norm_num_groups=1,
        num_embeds_ada_norm=10,
    )
    # eval(): DiT's label embedding drops labels at random in training mode (CFG dropout).
    student = TrigFlowStudent(dit, 0.5, cond_kwarg="class_labels").double().eval()
    labels = torch.tensor([1, 7])
    _check(student, torch.randn(2, 2, 4, 4, dtype=torch.float64), h=1e-3, cond=labels, rtol=1e-3)
    tau, v = torch.rand(2, dtype=torch.float64), torch.randn(2, 2, 4, 4, dtype=torch.float64)
    with pytest.raises(NotImplementedError, match="forward AD"), torch.no_grad():
        trigflow_jvp(lambda a, b: student.F(a, b, labels), v, tau, v, force_math=False)

"""LCM's guidance-conditioned student ``f_theta(z_t, w, c, t)`` (Luo et al. 2023, sec. 4.2)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from diffusers import DDPMScheduler
from torch.testing import assert_close

from onestep.core import noise
from onestep.core.adapters import from_unet2d_condition
from onestep.core.data.noise import NoiseDataModule
from onestep.core.denoiser import guidance_scale_embedding, split_guidance, with_guidance
from onestep.core.methods.builders import GMMData, tiny_denoiser_module
from onestep.core.methods.consistency import ConsistencyDistillation
from onestep.core.testing import (
    TinyMLP,
    gmm_teacher,
    quiet_trainer,
    tiny_denoiser,
    tiny_unet2d_condition,
)

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")


def _reference_embedding(w: list[float], dim: int) -> list[list[float]]:
    """The formula written out with Python floats, one entry at a time."""
    half = dim // 2
    rows = []
    for wi in w:
        s = (wi - 1.0) * 1000.0
        freqs = [math.exp(-math.log(10000.0) * i / (half - 1)) for i in range(half)]
        row = [math.sin(s * f) for f in freqs] + [math.cos(s * f) for f in freqs]
        rows.append(row + [0.0] * (dim % 2))
    return rows


@pytest.mark.parametrize("dim", [4, 7, 16])
def test_guidance_scale_embedding_matches_the_formula(dim):
    w = [1.0, 1.0005, 1.5, 3.0, 7.5]
    emb = guidance_scale_embedding(torch.tensor(w, dtype=torch.float64), dim)
    assert emb.shape == (len(w), dim) and emb.dtype == torch.float32
    expected = torch.tensor(_reference_embedding(w, dim), dtype=torch.float32)
    # (w - 1) * 1000 reaches 6500 rad: float32 angles are good to ~1e-3 there.
    assert_close(emb, expected, atol=2e-3, rtol=0)
    assert_close(emb[0], torch.tensor([0.0] * (dim // 2) + [1.0] * (dim // 2) + [0.0] * (dim % 2)))
    with pytest.raises(ValueError, match="dim >= 4"):
        guidance_scale_embedding(torch.ones(2), 2)


def test_with_and_split_guidance_round_trip():
    w, labels = torch.tensor([2.0, 3.0]), torch.tensor([0, 1])
    for cond in (None, labels):
        back, w_back = split_guidance(with_guidance(cond, w))
        assert back is cond and w_back is w
    kwargs = {"encoder_hidden_states": torch.zeros(2, 1, 8)}
    merged = with_guidance(kwargs, w)
    assert set(merged) == {"encoder_hidden_states", "guidance_scale"}
    assert split_guidance(merged) == (kwargs, w)
    assert split_guidance(labels) == (labels, None)


def _student(guidance_dim: int = 8):
    return tiny_denoiser_module(2, "flow", "x0", 16, cond_dim=8, seed=1, guidance_dim=guidance_dim)


def test_tiny_student_output_depends_on_w():
    d = _student()
    x, t, labels = torch.randn(4, 2), torch.full((4,), 0.7), torch.arange(4)
    a = d(x, t, with_guidance(labels, torch.full((4,), 1.5)))
    b = d(x, t, with_guidance(labels, torch.full((4,), 4.0)))
    assert not torch.allclose(a, b)
    # A scalar w is broadcast over the batch.
    assert_close(d(x, t, with_guidance(labels, torch.tensor(1.5))), a)
    with pytest.raises(ValueError, match="takes a guidance weight"):
        d(x, t, labels)
    with pytest.raises(ValueError, match="takes no guidance weight"):
        tiny_denoiser(2, noise.flow(), "x0", 16)(x, t, with_guidance(None, torch.ones(4)))


def _lcm(**kwargs) -> ConsistencyDistillation:
    kwargs.setdefault("guidance_range", (1.5, 4.0))
    kwargs.setdefault("guidance_embed", True)
    return ConsistencyDistillation(
        _student(kwargs.pop("guidance_dim", 8)),
        gmm_teacher("ring", noise.flow())[1],
        uncond=-1,
        num_scales=10,
        ema_decay=0.5,
        **kwargs,
    )


def test_student_and_target_see_the_teachers_w():
    m = _lcm()
    seen = []
    m.student.denoiser.register_forward_pre_hook(lambda mod, args: seen.append(("s", args[2])))
    assert m.target is not None
    m.target.denoiser.register_forward_pre_hook(lambda mod, args: seen.append(("t", args[2])))
    x, t, labels = torch.randn(6, 2), torch.full((6,), 0.5), torch.arange(6)
    w = m.guidance_weights(x)
    m.outputs(x, t, x, t * 0.8, m.student_cond(labels, w))
    assert [who for who, _ in seen] == ["s", "t"]
    for _, cond in seen:
        assert cond["cond"] is labels and cond["guidance_scale"] is w


def test_one_training_step_reaches_the_w_embedding():
    m = _lcm()
    net = m.student.denoiser.net
    assert isinstance(net, TinyMLP) and net.guidance_proj is not None
    proj = net.guidance_proj
    before = proj.weight.detach().clone()
    grads = []
    proj.weight.register_hook(lambda g: grads.append(g.detach().clone()))
    data = NoiseDataModule([2], 16, 1, num_classes=8, real=GMMData("ring"))
    trainer = quiet_trainer()
    trainer.fit(m, datamodule=data)
    assert len(grads) == 1 and float(grads[0].abs().sum()) > 0
    assert not torch.equal(proj.weight.detach(), before)


def test_sampling_needs_w_exactly_when_the_student_takes_it():
    m = _lcm()
    z, labels = torch.randn(5, 2), torch.arange(5)
    with pytest.raises(ValueError, match="pass guidance_scale"):
        m.sample(z, labels)
    a = m.sample(z, labels, guidance_scale=1.5)
    b = m.sample(z, labels, guidance_scale=torch.full((5,), 4.0))
    assert a.shape == z.shape and not torch.allclose(a, b)
    plain = ConsistencyDistillation(
        tiny_denoiser(2, noise.flow(), "x0", 16, cond_dim=8),
        gmm_teacher("ring", noise.flow())[1],
        guidance_scale=2.0,
        uncond=-1,
    )
    with pytest.raises(ValueError, match="takes no w"):
        plain.sample(z, labels, guidance_scale=2.0)
    assert plain.sample(z, labels).shape == z.shape


def test_guidance_embed_argument_checks():
    with pytest.raises(ValueError, match="set guidance_scale or guidance_range"):
        _lcm(guidance_range=None)
    with pytest.raises(ValueError, match="student that takes w"):
        _lcm(guidance_dim=0)
    with pytest.raises(ValueError, match="set guidance_embed=True"):
        _lcm(guidance_embed=False)


def test_unet2d_condition_takes_w_as_timestep_cond():
    torch.manual_seed(0)
    unet = tiny_unet2d_condition(channels=2, time_cond_proj_dim=8)
    d = from_unet2d_condition(unet, DDPMScheduler())
    assert d.guidance_dim == 8
    x, t = torch.randn(2, 2, 8, 8), torch.full((2,), 0.5)
    text = torch.randn(2, 3, 8)
    with torch.no_grad():
        a = d(x, t, with_guidance(text, torch.tensor([1.5, 1.5])))
        b = d(x, t, with_guidance({"encoder_hidden_states": text}, torch.tensor([4.0, 4.0])))
        # The same as giving diffusers the embedding directly, as the LCM pipeline does.
        emb = guidance_scale_embedding(torch.tensor([1.5, 1.5]), 8)
        ref = unet(x, d.net_time(t), encoder_hidden_states=text, timestep_cond=emb).sample
    assert not torch.allclose(a, b)
    assert_close(d.raw(x, t, with_guidance(text, torch.tensor([1.5, 1.5]))), ref)
    plain = from_unet2d_condition(tiny_unet2d_condition(channels=2), DDPMScheduler())
    with pytest.raises(ValueError, match="takes no guidance weight"):
        plain(x, t, with_guidance(text, torch.ones(2)))

"""The Real-ESRGAN second-order degradation: shapes, 8-bit output, seeding, strength, kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onestep.sr.data import (
    DegradationStage,
    RealESRGANConfig,
    RealESRGANDegradation,
    bicubic_downsample,
    embedded_photos,
    usm_sharpen_gt,
)


@pytest.fixture(scope="module")
def hr() -> torch.Tensor:
    """Eight 48x48 crops of a real photo (astronaut), [8, 3, 48, 48]."""
    photo = dict(embedded_photos("train"))["astronaut"]
    return torch.stack([photo[:, 40 * i : 40 * i + 48, 200:248] for i in range(8)])


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_lr_shape_range_dtype_and_8_bit_levels(hr):
    lr = RealESRGANDegradation(scale=4)(hr, _seeded(0))
    assert lr.shape == (8, 3, 12, 12) and lr.dtype == torch.float32
    assert lr.min() >= 0 and lr.max() <= 1
    torch.testing.assert_close(lr, (lr * 255).round() / 255, atol=0, rtol=0)
    lr64 = RealESRGANDegradation(scale=2)(hr[:2].double(), _seeded(0))
    assert lr64.shape == (2, 3, 24, 24) and lr64.dtype == torch.float64


def test_same_seed_same_lr_other_seed_other_lr(hr):
    degrade = RealESRGANDegradation(scale=4)
    a, b = degrade(hr, _seeded(3)), degrade(hr, _seeded(3))
    assert torch.equal(a, b)
    c = degrade(hr, _seeded(4))
    assert (a - c).abs().mean() > 0.01


def test_a_generator_leaves_the_global_rng_alone_and_none_follows_it(hr):
    degrade = RealESRGANDegradation(scale=4)
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    degrade(hr, _seeded(0))  # basicsr's noise draws from the global RNG: it must be restored
    assert torch.equal(torch.rand(4), expected)
    torch.manual_seed(7)
    a = degrade(hr)
    torch.manual_seed(7)
    assert torch.equal(degrade(hr), a)


def test_lr_is_far_more_degraded_than_bicubic(hr):
    bicubic = bicubic_downsample(hr, 4)
    degrade = RealESRGANDegradation(scale=4)
    psnr = []
    for seed in range(3):
        mse = (degrade(hr, _seeded(seed)) - bicubic).square().flatten(1).mean(1)
        psnr.append(-10 * torch.log10(mse))
    psnr = torch.cat(psnr)
    # An 8-bit re-quantised bicubic LR alone is above 50 dB; blur + noise + JPEG is far below.
    assert psnr.mean() < 28, psnr
    assert (psnr < 35).all(), psnr


def test_kernels_sum_to_one_are_padded_and_point_symmetric():
    degrade = RealESRGANDegradation(scale=4)
    kernels = degrade.sample_kernels(32, np.random.default_rng(0))
    for k in kernels:
        assert k.shape == (32, 21, 21) and k.dtype == torch.float32
        torch.testing.assert_close(k.sum((1, 2)), torch.ones(32))
        # Every family (rotated Gaussians, plateaus, sinc) is symmetric about the centre.
        torch.testing.assert_close(k, k.flip(1, 2), atol=1e-6, rtol=0)
    blur1, _, sinc = kernels
    assert len({tuple(k.flatten().tolist()) for k in blur1}) == 32  # per-sample kernels
    is_pulse = sinc[:, 10, 10] == 1
    assert 0 < is_pulse.sum() < 32  # final sinc with prob. 0.8, identity otherwise
    # Kernels smaller than 21 are zero-padded: some sample has a zero border.
    assert (blur1[:, 0, :].abs().sum(1) == 0).any()


def test_config_rejects_bad_options():
    with pytest.raises(ValueError, match="kernel_prob"):
        DegradationStage(kernel_prob=(0.5, 0.5, 0.5, 0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="unknown kernel types"):
        DegradationStage(kernel_list=("iso", "box"), kernel_prob=(0.5, 0.5))
    with pytest.raises(ValueError, match="resize_range must contain 1"):
        DegradationStage(resize_range=(0.2, 0.8))
    with pytest.raises(ValueError, match="odd"):
        RealESRGANConfig(kernel_sizes=(7, 8))


def test_input_checks_name_the_fix():
    degrade = RealESRGANDegradation(scale=4)
    with pytest.raises(ValueError, match="at least 44 px"):
        degrade(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="not a multiple of the scale 4"):
        degrade(torch.rand(1, 3, 50, 48))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        degrade(torch.rand(3, 48, 48))


def test_usm_sharpening_adds_high_frequencies(hr):
    sharp = usm_sharpen_gt(hr)
    assert sharp.shape == hr.shape and sharp.min() >= 0 and sharp.max() <= 1

    def detail(x):
        return (x[..., 1:, :] - x[..., :-1, :]).abs().mean()

    assert detail(sharp) > 1.05 * detail(hr)


@pytest.mark.gpu
def test_runs_on_cuda_and_is_reproducible(hr):
    degrade = RealESRGANDegradation(scale=4)
    gpu = hr.cuda()
    a, b = degrade(gpu, _seeded(0)), degrade(gpu, _seeded(0))
    assert a.is_cuda and a.shape == (8, 3, 12, 12)
    assert torch.equal(a, b)

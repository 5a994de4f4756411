"""Colour fixes: the wavelet fix swaps low frequencies, keeps high ones; AdaIN matches moments."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from onestep.sr.colorfix import adain_color_fix, wavelet_color_fix, wavelet_decompose

H = W = 128


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _smooth(a: float, b: float, phase: float) -> Tensor:
    """``[1, 3, H, W]`` colours varying over the whole image (1-cycle periodic patterns)."""
    y = torch.arange(H).view(H, 1).float() * 2 * math.pi / H
    x = torch.arange(W).view(1, W).float() * 2 * math.pi / W
    ones = torch.ones(H, W)
    return torch.stack(
        [
            a + 0.1 * torch.cos(x + phase) * ones,
            b + 0.1 * torch.sin(y + phase) * ones,
            (a + b) / 2 + 0.05 * torch.cos(x + y),
        ]
    )[None]


def _band(z: Tensor, low: bool) -> Tensor:
    """Fourier coefficients of ``z`` at radius <= 2 (low) or >= 16 (high) cycles per image."""
    f = torch.fft.fftfreq(H) * H
    radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt()
    mask = radius <= 2 if low else radius >= 16
    return torch.fft.fft2(z) * mask


def test_wavelet_bands_add_up_exactly():
    x = torch.rand(2, 3, 40, 24)
    high, low = wavelet_decompose(x, levels=4)
    torch.testing.assert_close(high + low, x)
    # The low band is smooth: far less pixel-to-pixel variation than the input.
    assert low.diff(dim=-1).abs().mean() < 0.1 * x.diff(dim=-1).abs().mean()


def test_wavelet_fix_takes_low_frequencies_from_reference_and_keeps_sr_detail():
    texture = 0.1 * torch.randn(1, 3, H, W)
    sr = _smooth(0.6, 0.3, 0.0) + texture  # wrong colours, the detail we want
    reference = _smooth(0.4, 0.5, 1.0)  # right colours, no detail (a bicubic upsample)
    out = wavelet_color_fix(sr, reference)

    def rel(a: Tensor, b: Tensor, scale: Tensor) -> float:
        return float((a - b).abs().norm() / scale.abs().norm())

    low_out, low_ref, low_sr = (_band(z, low=True) for z in (out, reference, sr))
    assert rel(low_out, low_ref, low_sr - low_ref) < 0.1
    high_out, high_sr = _band(out, low=False), _band(sr, low=False)
    assert rel(high_out, high_sr, high_sr) < 0.05
    # Per-channel means (the DC term) follow the reference.
    torch.testing.assert_close(out.mean((2, 3)), reference.mean((2, 3)), atol=5e-3, rtol=0)


def test_adain_matches_each_image_and_channel_moments():
    sr = torch.rand(3, 3, 20, 30) * 0.5 + 0.2
    reference = torch.rand(3, 3, 20, 30) * torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1) + 0.1
    out = adain_color_fix(sr, reference)
    std, mean = torch.std_mean(out, dim=(2, 3), correction=0)
    ref_std, ref_mean = torch.std_mean(reference, dim=(2, 3), correction=0)
    torch.testing.assert_close(mean, ref_mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(std, ref_std, atol=1e-4, rtol=0)
    # Within a channel it is an increasing affine map of sr: the spatial pattern is kept.
    corr = torch.corrcoef(torch.stack([out[1, 2].flatten(), sr[1, 2].flatten()]))[0, 1]
    assert corr > 0.9999
    # Each image is fixed on its own.
    torch.testing.assert_close(adain_color_fix(sr[1:2], reference[1:2]), out[1:2])


@pytest.mark.parametrize("fix", [wavelet_color_fix, adain_color_fix])
def test_shape_mismatch_is_a_clear_error(fix):
    with pytest.raises(ValueError, match=r"differ in shape.*upsample"):
        fix(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 8, 8))

"""MetricSuite: Y-channel PSNR/SSIM against independent code, NIQE, learned-metric weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from onestep.sr.metrics import (
    KNOWN_METRICS,
    LEARNED_WEIGHTS,
    LOWER_BETTER,
    MetricSuite,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def classic() -> MetricSuite:
    return MetricSuite(("psnr", "ssim", "niqe"), crop_border=4)


@pytest.fixture(scope="module")
def astronaut() -> Tensor:
    from skimage import data

    return torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255  # (1,3,512,512)


def _noisy(x: Tensor, sigma: float) -> Tensor:
    return (x + sigma * torch.randn_like(x)).clamp(0, 1)


def _y_bt601(x: Tensor) -> np.ndarray:
    """Studio-range BT.601 luma in [16, 235], the SR literature's Y (MATLAB ``rgb2ycbcr``)."""
    a = x.double().numpy()
    return 16.0 + 65.481 * a[:, 0] + 128.553 * a[:, 1] + 24.966 * a[:, 2]


def _psnr_np(a: np.ndarray, b: np.ndarray, crop: int) -> np.ndarray:
    if crop:
        a, b = a[..., crop:-crop, crop:-crop], b[..., crop:-crop, crop:-crop]
    mse = ((a - b) ** 2).mean(axis=(-2, -1))
    return 10 * np.log10(255.0**2 / mse)


def test_psnr_is_bt601_y_with_border_crop(classic):
    hr = torch.rand(3, 3, 40, 48)
    sr = _noisy(hr, 0.05)
    got = classic(sr, hr)["psnr"].double().numpy()
    want = _psnr_np(_y_bt601(sr), _y_bt601(hr), crop=4)
    np.testing.assert_allclose(got, want, atol=1e-3)
    rgb = _psnr_np(sr.double().numpy() * 255, hr.double().numpy() * 255, crop=4).mean(axis=1)
    assert np.all(np.abs(got - rgb) > 0.3)  # not RGB PSNR
    yiq = 255 * (0.299 * sr[:, 0] + 0.587 * sr[:, 1] + 0.114 * sr[:, 2]).double().numpy()
    yiq_hr = 255 * (0.299 * hr[:, 0] + 0.587 * hr[:, 1] + 0.114 * hr[:, 2]).double().numpy()
    assert np.all(np.abs(got - _psnr_np(yiq, yiq_hr, crop=4)) > 0.3)  # not pyiqa's default Y


def test_border_crop_removes_exactly_crop_border_pixels(classic):
    hr = torch.rand(1, 3, 40, 40)
    sr = hr.clone()
    sr[..., :4, :] = 1 - sr[..., :4, :]  # damage only the 4-pixel top border
    assert classic(sr, hr)["psnr"].item() == pytest.approx(80.0)  # identical after the crop
    sr[..., 4, :] = 1 - sr[..., 4, :]  # one row further in is counted
    assert classic(sr, hr)["psnr"].item() < 40.0
    uncropped = MetricSuite(("psnr",), crop_border=0)
    assert uncropped(sr, hr)["psnr"].item() < classic(sr, hr)["psnr"].item()


def test_ssim_is_one_for_identical_images_and_drops_with_noise(classic):
    hr = torch.rand(2, 3, 64, 64) * 0.5 + 0.25
    assert torch.allclose(classic(hr, hr)["ssim"], torch.ones(2))
    scores = [classic(_noisy(hr, s), hr)["ssim"] for s in (0.01, 0.03, 0.1)]
    assert torch.all(scores[0] > scores[1]) and torch.all(scores[1] > scores[2])


def test_ssim_matches_scikit_image_on_rounded_y(classic, astronaut):
    from skimage.metrics import structural_similarity

    hr = astronaut[..., 100:228, 150:278]
    sr = _noisy(hr, 0.05)
    got = classic(sr, hr)["ssim"].item()
    ya, yb = (np.round(_y_bt601(x)[0][4:-4, 4:-4]) for x in (sr, hr))
    want = structural_similarity(
        ya, yb, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert got == pytest.approx(want, abs=1e-4)


def test_niqe_is_basicsr_on_bgr_and_higher_for_noise(classic, astronaut):
    from basicsr.metrics.niqe import calculate_niqe

    clean = classic(astronaut, astronaut)["niqe"].item()
    noisy = classic(_noisy(astronaut, 0.08), astronaut)["niqe"].item()
    assert np.isfinite(clean) and 0 < clean < 10
    assert noisy > clean + 1
    uint8 = (astronaut[0].permute(1, 2, 0).numpy() * 255).round()
    bgr = calculate_niqe(uint8[..., ::-1], crop_border=0)
    rgb = calculate_niqe(uint8, crop_border=0)
    assert clean == pytest.approx(bgr, abs=1e-4)
    assert abs(bgr - rgb) > 1e-2  # the channel order matters, so the test above can fail


def test_small_images_skip_niqe_with_a_reason(classic):
    hr = torch.rand(1, 3, 100, 100)
    scores = classic(hr, hr)
    assert set(scores) == {"psnr", "ssim"}
    assert "96x96" in classic.skipped["niqe"] and "100x100" in classic.skipped["niqe"]
    classic(torch.rand(1, 3, 96, 192), torch.rand(1, 3, 96, 192))
    assert "niqe" not in classic.skipped  # per call: a large enough input clears it


def test_learned_metrics_without_weights_are_skipped_with_the_expected_file(tmp_path):
    suite = MetricSuite(("psnr", "lpips", "musiq"), weights_dir=tmp_path)
    assert suite.available == ("psnr",)
    assert set(suite.skipped) == {"lpips", "musiq"}
    assert str(tmp_path) in suite.skipped["lpips"]
    assert "LPIPS_v0.1_alex-df73285e.pth" in suite.skipped["lpips"]
    assert "musiq_koniq_ckpt-e95806b9.pth" in suite.skipped["musiq"]
    hr = torch.rand(1, 3, 32, 32)
    assert set(suite(hr, hr)) == {"psnr"}
    assert "no weights_dir" in MetricSuite(("clipiqa",)).skipped["clipiqa"]


def test_missing_torchvision_backbone_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # an empty torch hub cache
    (tmp_path / "pyiqa").mkdir()
    (tmp_path / "pyiqa" / "DISTS_weights-f5e65c96.pth").touch()
    suite = MetricSuite(("dists",), weights_dir=tmp_path)
    assert "checkpoints/vgg16-397923af.pth" in suite.skipped["dists"]


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown metric.*'fid'.*psnr, ssim, niqe, lpips"):
        MetricSuite(("psnr", "fid"))


def test_inputs_are_checked(classic):
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]; clamp"):
        classic(x * 1.5, x)
    with pytest.raises(ValueError, match="pass hr"):
        classic(x)
    with pytest.raises(ValueError, match="differ in shape"):
        classic(x, torch.rand(1, 3, 32, 16))


def test_file_names_and_directions_agree_with_pyiqa_and_torchvision():
    import torchvision.models as tvm
    from pyiqa.archs import dists_arch, lpips_arch, maniqa_arch, musiq_arch
    from pyiqa.archs.clip_model import _MODELS
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    def base(url: str) -> str:
        return Path(url).name

    assert DEFAULT_CONFIGS["lpips"]["metric_opts"]["net"] == "alex"
    assert DEFAULT_CONFIGS["musiq"]["metric_opts"]["pretrained"] == "koniq10k"
    assert DEFAULT_CONFIGS["maniqa"]["metric_opts"]["train_dataset"] == "koniq"
    expected = {
        "lpips": (base(lpips_arch.default_model_urls["0.1_alex"]), tvm.AlexNet_Weights),
        "dists": (base(dists_arch.default_model_urls["url"]), tvm.VGG16_Weights),
        "musiq": (base(musiq_arch.default_model_urls["koniq10k"]), None),
        "clipiqa": (base(_MODELS["RN50"]), None),
        "maniqa": (base(maniqa_arch.default_model_urls["koniq"]), None),
    }
    for name, (checkpoint, backbone) in expected.items():
        assert LEARNED_WEIGHTS[name].checkpoint == checkpoint
        want = base(backbone.IMAGENET1K_V1.url) if backbone else None
        assert LEARNED_WEIGHTS[name].backbone == want
    for name in KNOWN_METRICS:
        assert LOWER_BETTER[name] == DEFAULT_CONFIGS[name].get("lower_better", False), name


@pytest.mark.slow
def test_musiq_is_built_from_the_local_checkpoint(tmp_path, astronaut):
    from pyiqa.archs.musiq_arch import MUSIQ

    net = MUSIQ(pretrained=False).eval()  # random weights stand in for the released ones
    torch.save(net.state_dict(), tmp_path / "musiq_koniq_ckpt-e95806b9.pth")
    suite = MetricSuite(("musiq",), weights_dir=tmp_path)
    assert suite.available == ("musiq",) and suite.lower_better == {"musiq": False}
    x = astronaut[..., :256, :256]
    with torch.no_grad():
        want = net(x).reshape(1)
    torch.testing.assert_close(suite(x)["musiq"], want)

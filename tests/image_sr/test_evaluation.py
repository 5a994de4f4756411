"""Evaluation: exact metric rows, latency after a warm-up, tables and strips; inside Lightning."""

import csv
import math
import warnings

import lightning as L
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from onestep.sr.data import SRDataModule, bicubic_downsample, embedded_photos, load_image
from onestep.sr.evaluation import PredictImages, evaluate_resolvers, mean_by_method, slug
from onestep.sr.metrics import MetricSuite
from onestep.sr.models.teacher import SRTeacher
from onestep.sr.models.unet import tiny_unet
from onestep.sr.resolver import Bicubic, SuperResolver, upsample
from onestep.sr.upscale import save_png

warnings.filterwarnings("ignore", ".*does not have many workers.*")


class Nearest(SuperResolver):
    """Nearest-neighbour upsampling that counts its calls."""

    def __init__(self, scale=4):
        super().__init__()
        self.scale, self.calls = scale, 0

    def forward(self, lr):
        self.calls += 1
        return torch.nn.functional.interpolate(lr, scale_factor=self.scale, mode="nearest")


def _pairs(n=2, side=192):
    """Centre crops of the held-out photos (NIQE needs two 96 px blocks) with bicubic LR."""
    pairs = []
    for name, hr in embedded_photos("val")[:n]:
        top, left = (hr.shape[1] - side) // 2, (hr.shape[2] - side) // 2
        hr = hr[None, :, top : top + side, left : left + side]
        pairs.append((name, bicubic_downsample(hr, 4), hr))
    return pairs


def test_rows_are_the_metric_suites_numbers(tmp_path):
    pairs = _pairs()
    nearest = Nearest()
    rows, means = evaluate_resolvers(
        {"bicubic": Bicubic(4), "nearest": nearest}, pairs, tmp_path, strip_first=1
    )
    assert [(r["name"], r["method"]) for r in rows] == [
        ("chelsea", "bicubic"),
        ("chelsea", "nearest"),
        ("coffee", "bicubic"),
        ("coffee", "nearest"),
    ]
    suite = MetricSuite(("psnr", "ssim", "niqe"), crop_border=4)
    _, lr, hr = pairs[1]
    expected = suite(upsample(lr, 4).clamp(0, 1), hr)
    row = rows[2]
    for key in ("psnr", "ssim", "niqe"):
        assert row[key] == pytest.approx(float(expected[key][0]), rel=1e-6), key
    assert rows[0]["psnr"] > rows[1]["psnr"]  # bicubic beats nearest on smooth photos
    assert all(r["latency_s"] > 0 for r in rows)
    assert nearest.calls == len(pairs) + 1  # one untimed warm-up call, then one per image

    assert set(means) == {"bicubic", "nearest"}
    bicubic = [r for r in rows if r["method"] == "bicubic"]
    assert means["bicubic"]["images"] == 2
    assert means["bicubic"]["psnr"] == pytest.approx(sum(r["psnr"] for r in bicubic) / 2)

    with (tmp_path / "metrics.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [t["name"] for t in table] == ["chelsea", "coffee", "mean"]
    assert float(table[-1]["psnr nearest"]) == pytest.approx(means["nearest"]["psnr"])
    assert "| psnr bicubic |" in (tmp_path / "metrics.md").read_text()
    strips = sorted(tmp_path.glob("strip_*.png"))
    assert [s.name for s in strips] == ["strip_chelsea.png"]
    width = Image.open(strips[0]).width
    assert width == 3 * 192 + 2 * 4  # bicubic | nearest | HR, 4 px gaps


def test_mean_by_method_skips_missing_metrics():
    rows = [
        {"name": "a", "method": "m", "psnr": 20.0, "niqe": 5.0},
        {"name": "b", "method": "m", "psnr": 30.0},
    ]
    assert mean_by_method(rows) == {"m": {"images": 2, "psnr": 25.0, "niqe": 5.0}}


def test_resolvers_must_share_a_scale(tmp_path):
    with pytest.raises(ValueError, match="share one scale"):
        evaluate_resolvers({"x2": Bicubic(2), "x4": Bicubic(4)}, _pairs(1), tmp_path)
    with pytest.raises(ValueError, match="no image was scored"):
        evaluate_resolvers({"x4": Bicubic(4)}, [], tmp_path)


def test_slug():
    assert slug("SRTeacher 4-step") == "srteacher_4_step"


def _trainer(root):
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )


def test_lightning_test_writes_the_table_and_logs_means(tmp_path):
    # An untrained teacher returns z_L exactly (zero output layer), so its 1-step Euler sample
    # is the bicubic image: both methods must score the same.
    teacher = SRTeacher(net=tiny_unet(widths=(8, 16), groups=4), scale=4, val_steps=(1,))
    data = SRDataModule(scale=4)
    results = _trainer(tmp_path).test(teacher, datamodule=data, verbose=False)[0]
    assert results["test/psnr/srteacher_1_step"] == pytest.approx(
        results["test/psnr/bicubic"], abs=1e-4
    )
    assert 20 < results["test/psnr/bicubic"] < 40
    assert results["test/latency_s/srteacher_1_step"] > 0
    out = tmp_path / "test"
    with (out / "metrics.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [t["name"] for t in table] == ["chelsea", "coffee", "mean"]
    assert math.isclose(
        float(table[-1]["ssim SRTeacher 1-step"]),
        results["test/ssim/srteacher_1_step"],
        rel_tol=1e-5,
    )
    assert {p.name for p in out.glob("strip_*.png")} == {"strip_chelsea.png", "strip_coffee.png"}


def test_lightning_predict_writes_pngs(tmp_path):
    teacher = SRTeacher(net=tiny_unet(widths=(8, 16), groups=4), scale=4, val_steps=(1, 2))
    folder = tmp_path / "in"
    folder.mkdir()
    save_png(torch.rand(3, 10, 14), folder / "a.png")
    save_png(torch.rand(3, 9, 7), tmp_path / "b.png")  # odd sizes: padded and cropped back
    data = PredictImages([str(folder), str(tmp_path / "b.png")], output=str(tmp_path / "out"))
    batches = _trainer(tmp_path).predict(teacher, datamodule=data)
    assert batches is not None
    assert [tuple(b.shape) for b in batches] == [(1, 3, 40, 56), (1, 3, 36, 28)]  # pyright: ignore[reportAttributeAccessIssue]
    written = load_image(tmp_path / "out" / "b.png")
    assert_close(written, (batches[1][0] * 255).round() / 255, atol=1e-6, rtol=0)  # pyright: ignore[reportIndexIssue]
    with pytest.raises(FileNotFoundError, match="neither an image nor a folder"):
        PredictImages([str(tmp_path / "nope.png")])
    save_png(torch.rand(3, 4, 4), folder / "b.png")
    with pytest.raises(ValueError, match=r"file stem\(s\) \['b'\]"):
        PredictImages([str(folder), str(tmp_path / "b.png")])

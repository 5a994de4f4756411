"""Reports: the metrics table (CSV + aligned markdown, mean row) and the labelled image strip."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from onestep.sr.report import image_strip, write_table

ROWS = [
    {"image": "0801.png", "psnr": 24.5, "ssim": 0.75, "niqe": 4.0},
    {"image": "0802.png", "psnr": 26.5, "ssim": 0.65},  # niqe skipped for this one
    {"image": "0803.png", "psnr": 22.0, "ssim": 0.7, "niqe": 5.0},
]


def test_csv_has_the_rows_and_a_mean_row(tmp_path):
    csv_path, md_path = write_table(ROWS, tmp_path / "out")
    assert csv_path.name == "metrics.csv" and md_path.name == "metrics.md"
    with csv_path.open() as f:
        table = list(csv.DictReader(f))
    assert [r["image"] for r in table] == ["0801.png", "0802.png", "0803.png", "mean"]
    assert table[1]["niqe"] == ""
    mean = table[-1]
    assert float(mean["psnr"]) == pytest.approx(24.333333, abs=1e-5)
    assert float(mean["ssim"]) == pytest.approx(0.7)
    assert float(mean["niqe"]) == pytest.approx(4.5)  # over the images that have it


def test_markdown_is_aligned_with_fixed_decimals(tmp_path):
    _, md_path = write_table(ROWS, tmp_path, name="x4", decimals=2)
    lines = md_path.read_text().splitlines()
    assert md_path.name == "x4.md"
    assert len(lines) == 2 + 4
    assert len({len(line) for line in lines}) == 1  # every row padded to the same width
    assert lines[1].startswith("| ---") and lines[1].rstrip(" |").endswith(":")  # numbers right
    cells = [c.strip() for c in lines[-1].strip("|").split("|")]
    assert cells == ["mean", "24.33", "0.70", "4.50"]
    assert [c.strip() for c in lines[3].strip("|").split("|")][3] == ""


def test_empty_table_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no rows"):
        write_table([], tmp_path)


def test_strip_places_images_side_by_side_under_labels(tmp_path):
    torch.manual_seed(0)
    hr = torch.rand(3, 32, 40)
    lr = torch.rand(3, 8, 10)  # enlarged x4 to the common height
    cols = {"LR bicubic": lr, "student 1-step": torch.rand(3, 32, 40), "HR": hr}
    path = image_strip(cols, tmp_path / "strips" / "0801.png", gap=4)
    with Image.open(path) as png:
        img = np.asarray(png.convert("RGB"))
    band = img.shape[0] - 32
    assert img.shape[1] == 40 * 3 + 4 * 2 and band > 5
    # Labels are drawn in the band above each image.
    assert (img[:band, :40] < 128).any() and (img[:band, 88:] < 128).any()
    # The images are there, pixel for pixel (HR at the right, LR repeated 4x4).
    hr8 = (hr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(img[band:, 88:], hr8)
    lr8 = (lr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(img[band:, :40], lr8.repeat(4, axis=0).repeat(4, axis=1))
    assert (img[band:, 40:44] == 255).all()  # white gap


def test_strip_rejects_a_batch(tmp_path):
    with pytest.raises(ValueError, match="'HR': expected \\[3, H, W\\]"):
        image_strip({"HR": torch.rand(1, 3, 8, 8)}, tmp_path / "s.png")

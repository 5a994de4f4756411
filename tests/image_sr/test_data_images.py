"""Image reading (format conversions, bad files) and the bicubic degradation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from onestep.sr.data import (
    ImageReadError,
    bicubic_downsample,
    list_images,
    load_image,
    modcrop,
    random_crop,
)


def _photo(h: int = 24, w: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgb_png_round_trips_exactly(tmp_path):
    arr = _photo()
    Image.fromarray(arr).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.shape == (3, 24, 32) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)


def test_grayscale_is_replicated_and_16_bit_is_scaled(tmp_path):
    gray = _photo()[:, :, 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    x = load_image(tmp_path / "g.png")
    assert x.shape == (3, 24, 32)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    torch.testing.assert_close(x[0], torch.from_numpy(gray).float() / 255)
    deep = (gray.astype(np.uint16) * 257).astype(np.uint16)  # 8-bit values spread to 16 bits
    Image.fromarray(deep).save(tmp_path / "d.png")
    y = load_image(tmp_path / "d.png")
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:2, :, 3] = 255  # top half opaque, bottom half fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    x = load_image(tmp_path / "t.png")
    red = torch.tensor([1.0, 0.0, 0.0])[:, None, None].expand(3, 2, 4)
    torch.testing.assert_close(x[:, :2], red)
    assert torch.equal(x[:, 2:], torch.ones(3, 2, 4))


def test_palette_and_cmyk_become_rgb(tmp_path):
    Image.fromarray(_photo()).convert("P").save(tmp_path / "p.png")
    Image.fromarray(_photo()).convert("CMYK").save(tmp_path / "c.jpg")
    for name in ("p.png", "c.jpg"):
        x = load_image(tmp_path / name)
        assert x.shape == (3, 24, 32) and 0 <= float(x.min()) and float(x.max()) <= 1


def test_bad_files_raise_a_clear_error_naming_the_file(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match=r"junk\.png"):
        load_image(tmp_path / "junk.png")
    Image.fromarray(_photo(64, 64)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageReadError, match=r"cut\.jpg"):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        load_image(tmp_path / "missing.png")


def test_list_images_filters_by_suffix_and_refuses_empty_folders(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.PNG", "sub/a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["b.PNG", "a.jpg"]
    with pytest.raises(ValueError, match="no images"):
        list_images(tmp_path / "sub", suffixes=(".webp",))
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "nope")


def test_bicubic_downsample_shapes_and_constant_images():
    hr = torch.rand(3, 35, 42)
    lr = bicubic_downsample(hr, 4)
    assert lr.shape == (3, 8, 10)
    assert modcrop(hr, 4).shape == (3, 32, 40)
    flat = torch.full((2, 3, 16, 16), 0.3)
    torch.testing.assert_close(bicubic_downsample(flat, 2), torch.full((2, 3, 8, 8), 0.3))
    # antialiased: a x4 shrink of white noise averages ~16 pixels; the plain bicubic resize
    # (no antialiasing) reads ~4 around each sample and keeps about twice the spread
    noise = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    smooth = bicubic_downsample(noise, 4)
    plain = F.interpolate(noise, size=(32, 32), mode="bicubic").clamp(0, 1)
    assert float(smooth.std()) < 0.6 * float(plain.std())
    with pytest.raises(ValueError, match="scale"):
        bicubic_downsample(hr, 0)
    with pytest.raises(TypeError, match="float"):
        bicubic_downsample(torch.zeros(3, 8, 8, dtype=torch.uint8), 2)


def test_random_crop_is_seeded_and_rejects_small_images():
    img = torch.rand(3, 20, 30)
    a = random_crop(img, 8, torch.Generator().manual_seed(1))
    b = random_crop(img, 8, torch.Generator().manual_seed(1))
    assert a.shape == (3, 8, 8) and torch.equal(a, b)
    with pytest.raises(ValueError, match="20x30 is smaller than the 24x24 crop"):
        random_crop(img, 24)

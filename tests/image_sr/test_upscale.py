"""upscale: padding to the resolver's multiple, tiles blended without seams, files in and out."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from onestep.sr.resolver import Bicubic, SuperResolver, check_lr
from onestep.sr.upscale import tile_starts, upscale, upscale_files


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class ConvShuffle(SuperResolver):
    """``depth`` 3x3 convs then pixel shuffle: each output pixel sees ``depth`` LR pixels around."""

    def __init__(self, scale: int = 2, depth: int = 3, width: int = 8, multiple: int = 1) -> None:
        super().__init__()
        self.scale, self.multiple = scale, multiple
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1)]
        for _ in range(depth - 2):
            layers += [nn.Tanh(), nn.Conv2d(width, width, 3, padding=1)]
        layers += [nn.Tanh(), nn.Conv2d(width, 3 * scale * scale, 3, padding=1)]
        self.body = nn.Sequential(*layers, nn.PixelShuffle(scale))

    def forward(self, lr: Tensor) -> Tensor:
        check_lr(lr)
        if lr.shape[-2] % self.multiple or lr.shape[-1] % self.multiple:
            raise AssertionError(f"input {tuple(lr.shape)} not padded to {self.multiple}")
        return F.interpolate(lr, scale_factor=self.scale, mode="nearest") + self.body(lr)


def _edge_distance(length: int, tile: int, overlap: int, scale: int) -> np.ndarray:
    """HR distance of each output pixel to the nearest interior (cut) tile edge on one axis."""
    edges = []
    for start in tile_starts(length, tile // scale, overlap // scale):
        end = min(start + tile // scale, length)
        edges += [e * scale for e in (start, end) if 0 < e < length]
    pos = np.arange(length * scale) + 0.5
    if not edges:
        return np.full(length * scale, np.inf)
    return np.min(np.abs(pos[:, None] - np.array(edges)[None, :]), axis=1)


def test_tile_starts_cover_the_axis_with_at_least_the_overlap():
    assert tile_starts(10, 16, 4) == [0]
    starts = tile_starts(50, 32, 16)
    assert starts == [0, 16, 18]
    for a, b in itertools.pairwise(starts):
        assert a + 32 - b >= 16


def test_untiled_run_equals_bicubic_for_the_bicubic_resolver():
    lr = torch.rand(2, 3, 13, 17)
    out = upscale(Bicubic(3), lr)
    assert out.shape == (2, 3, 39, 51)
    torch.testing.assert_close(out, Bicubic(3)(lr))


def test_tiled_equals_untiled_when_the_receptive_field_fits_in_the_overlap():
    # Radius 3 LR = 6 HR pixels <= overlap / 4 = 8 HR: the blended tiles are exact.
    net = ConvShuffle(scale=2, depth=3).eval()
    lr = torch.rand(2, 3, 50, 70)
    whole = upscale(net, lr)
    tiled = upscale(net, lr, tile=64, overlap=32)
    assert tiled.shape == whole.shape == (2, 3, 100, 140)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


def test_deeper_net_is_exact_away_from_seams_and_blending_beats_hard_tiles():
    # Radius 6 LR = 12 HR pixels > overlap / 4 = 8: wrong near cut edges, faded, exact elsewhere.
    net = ConvShuffle(scale=2, depth=6).eval()
    lr = torch.rand(1, 3, 96, 96)
    whole = upscale(net, lr)
    blended = upscale(net, lr, tile=128, overlap=32)
    hard = upscale(net, lr, tile=128, overlap=0)
    err = (blended - whole).abs().amax(dim=(0, 1)).numpy()  # (H, W)
    dist = _edge_distance(96, 128, 32, 2)
    far = np.minimum(dist[:, None], dist[None, :]) > 12
    assert far.mean() > 0.3
    assert err[far].max() < 1e-5
    # Stated tolerance near seams for this 6-layer net (hard tiles are off by ~0.06 here).
    assert err.max() < 2e-3
    assert err.max() < 0.1 * (hard - whole).abs().max().item()


@pytest.mark.parametrize("size", [(13, 21), (3, 5), (32, 40)])
def test_sizes_that_are_not_multiples_are_padded_and_cropped(size):
    net = ConvShuffle(scale=2, depth=2, multiple=8).eval()  # raises on unpadded input
    big = torch.rand(1, 3, 32, 40)
    lr = big[..., : size[0], : size[1]]
    out = upscale(net, lr)
    assert out.shape == (1, 3, size[0] * 2, size[1] * 2)
    assert upscale(net, lr, tile=16, overlap=8).shape == out.shape
    # More than the radius (2 LR = 4 HR pixels) from the padded bottom/right edge, the output
    # is what the net gives on the larger image: the padding was cropped away.
    h, w = out.shape[-2] - 4, out.shape[-1] - 4
    torch.testing.assert_close(out[..., :h, :w], net(big)[..., :h, :w], atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("tile", "overlap", "match"),
    [(63, 32, "tile=63.*multiple of the scale 2"), (64, 31, "overlap=31"), (64, 64, "smaller")],
)
def test_bad_tile_or_overlap_is_a_clear_error(tile, overlap, match):
    with pytest.raises(ValueError, match=match):
        upscale(Bicubic(2), torch.rand(1, 3, 8, 8), tile=tile, overlap=overlap)


def test_unknown_color_fix_is_an_error():
    with pytest.raises(ValueError, match=r"unknown color_fix 'hist'.*adain"):
        upscale(Bicubic(2), torch.rand(1, 3, 8, 8), color_fix="hist")


@pytest.mark.parametrize("fix", ["wavelet", "adain"])
def test_color_fix_keeps_the_range(fix):
    out = upscale(ConvShuffle(scale=2).eval(), torch.rand(1, 3, 16, 16), color_fix=fix)
    assert out.shape == (1, 3, 32, 32) and out.min() >= 0 and out.max() <= 1


def test_upscale_files_writes_pngs_of_the_right_size(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(src / "a.png")
    Image.fromarray(rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)).save(src / "sub" / "b.jpg")
    single = tmp_path / "c.png"
    Image.fromarray(rng.integers(0, 256, (5, 6), dtype=np.uint8), mode="L").save(single)
    written = upscale_files(Bicubic(4), [src, single], tmp_path / "out", tile=16, overlap=8)
    assert [p.name for p in written] == ["a.png", "b.png", "c.png"]
    for path, size in zip(written, [(48, 40), (36, 28), (24, 20)], strict=True):
        with Image.open(path) as img:
            assert img.size == size and img.mode == "RGB"


def test_upscale_files_errors_name_the_input(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        upscale_files(Bicubic(2), [tmp_path / "missing.png"], tmp_path / "out")
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / d / "same.png")
    with pytest.raises(ValueError, match=r"same\.png"):
        upscale_files(Bicubic(2), [tmp_path / "x", tmp_path / "y"], tmp_path / "out")

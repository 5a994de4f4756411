"""Embedded photos, HR crop / validation / paired datasets and the SR Lightning data module."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from onestep.sr.data import (
    EMBEDDED_TRAIN,
    EMBEDDED_VAL,
    CenterCrops,
    EpochSampler,
    HRCrops,
    ImageReadError,
    PairedFolder,
    SRDataModule,
    bicubic_downsample,
    embedded_photos,
    pair_key,
)
from onestep.sr.data import samples as samples_module


def _save(path: Path, h: int, w: int, seed: int = 0) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


def _tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255


# ---- embedded photos -------------------------------------------------------------------------


def test_embedded_photos_load_with_the_network_cut(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    samples_module._load.cache_clear()  # decode again, now offline
    photos = embedded_photos("all")
    assert [name for name, _ in photos] == list(EMBEDDED_TRAIN + EMBEDDED_VAL)
    sizes = {name: tuple(x.shape) for name, x in photos}
    assert sizes["astronaut"] == (3, 512, 512) and sizes["chelsea"] == (3, 300, 451)
    for name, x in photos:
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1, name
        assert x[0].sub(x[1]).abs().mean() > 0.01, f"{name} looks gray"


def test_embedded_train_and_val_are_disjoint_and_copies():
    train, val = embedded_photos("train"), embedded_photos("val")
    assert len(train) == 5 and len(val) == 2
    assert not {n for n, _ in train} & {n for n, _ in val}
    # Pixel-level disjointness too: no val photo equals a train photo.
    for _, v in val:
        assert all(v.shape != t.shape or not torch.equal(v, t) for _, t in train)
    val[0][1].zero_()
    assert embedded_photos("val")[0][1].max() > 0  # callers get copies
    with pytest.raises(ValueError, match="split must be one of"):
        embedded_photos("test")  # type: ignore[arg-type]


# ---- HRCrops -----------------------------------------------------------------------------------


def test_hr_crops_sizes_bicubic_lr_and_names():
    data = HRCrops(embedded_photos("train"), crop=32, scale=4, samples_per_epoch=10)
    assert len(data) == 10
    item = data[3]
    assert "lr" in item
    assert item["hr"].shape == (3, 32, 32) and item["lr"].shape == (3, 8, 8)
    torch.testing.assert_close(item["lr"], bicubic_downsample(item["hr"], 4))
    assert item["name"] == EMBEDDED_TRAIN[3]
    assert "lr" not in HRCrops(embedded_photos("train"), crop=48, degradation="realesrgan")[0]


def test_hr_crops_are_reproducible_per_seed_and_index():
    photos = embedded_photos("train")
    a, b = HRCrops(photos, crop=32, seed=1), HRCrops(photos, crop=32, seed=1)
    other = HRCrops(photos, crop=32, seed=2)
    for i in (0, 7, 10_000):
        assert torch.equal(a[i]["hr"], b[i]["hr"])
        assert not torch.equal(a[i]["hr"], other[i]["hr"])
    assert not torch.equal(a[0]["hr"], a[5]["hr"])  # same image, another crop


def test_hr_crops_flip_and_rotate_through_all_eight_symmetries():
    img = _tensor(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    data = HRCrops([("tile", img)], crop=8, scale=4)  # crop == image: only the transform varies
    variants = {tuple(data[i]["hr"].flatten().tolist()) for i in range(64)}
    expected = set()
    for k in range(4):
        r = torch.rot90(img, k, dims=(1, 2))
        expected |= {tuple(r.flatten().tolist()), tuple(r.flip(2).flatten().tolist())}
    assert variants == expected and len(expected) == 8
    plain = HRCrops([("tile", img)], crop=8, scale=4, augment=False)
    assert torch.equal(plain[5]["hr"], img)


def test_hr_crops_reject_bad_crop_and_small_images(tmp_path):
    with pytest.raises(ValueError, match=r"multiple of the scale 4.*try 32"):
        HRCrops(embedded_photos("val"), crop=30)
    _save(tmp_path / "big.png", 64, 64)
    _save(tmp_path / "tiny.png", 20, 40)
    with pytest.raises(ValueError, match=r"tiny\.png is 20x40, smaller than the 32x32 crop"):
        HRCrops(tmp_path, crop=32)
    with pytest.raises(ValueError, match=r"choose one of \['bicubic', 'realesrgan'\]"):
        HRCrops(tmp_path, crop=16, degradation="jpeg")


def test_truncated_file_fails_when_the_dataset_is_built(tmp_path):
    _save(tmp_path / "good.png", 40, 40)
    _save(tmp_path / "cut.png", 40, 40, seed=1)
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.png"):
        HRCrops(tmp_path, crop=16)
    with pytest.raises(ImageReadError, match=r"cut\.png"):
        CenterCrops(tmp_path, crop=16)


def test_epoch_sampler_gives_new_indices_each_epoch():
    sampler = EpochSampler(4)
    assert list(sampler) == [0, 1, 2, 3]
    sampler.set_epoch(2)
    assert list(sampler) == [8, 9, 10, 11] and len(sampler) == 4


# ---- CenterCrops / PairedFolder ----------------------------------------------------------------


def test_center_crops_are_the_centre_with_bicubic_lr():
    photos = embedded_photos("val")
    data = CenterCrops(photos, scale=4, crop=64)
    item = data[0]
    img = photos[0][1]
    top, left = (img.shape[1] - 64) // 2, (img.shape[2] - 64) // 2
    assert torch.equal(item["hr"], img[:, top : top + 64, left : left + 64])
    torch.testing.assert_close(item["lr"], bicubic_downsample(item["hr"], 4))
    whole = CenterCrops(photos, scale=4, crop=None)[0]
    assert whole["hr"].shape == (3, 300, 448) and whole["lr"].shape == (3, 75, 112)


def test_pair_key_strips_one_role_or_scale_token():
    assert pair_key("Canon_001_LR4") == pair_key("Canon_001_HR") == "Canon_001"
    assert pair_key("0801x4") == pair_key("0801") == "0801"
    assert pair_key("DSC_1454_x4") == pair_key("DSC_1454_x1") == "DSC_1454"
    assert pair_key("xmas_tree") == "xmas_tree"


def test_paired_folder_pairs_by_key_and_checks_sizes(tmp_path):
    lr_arr = _save(tmp_path / "lr" / "Canon_001_LR4.png", 6, 8)
    _save(tmp_path / "hr" / "Canon_001_HR.png", 24, 32)
    _save(tmp_path / "lr" / "0801x4.png", 5, 5, seed=2)
    _save(tmp_path / "hr" / "0801.png", 22, 23, seed=3)  # not a multiple of 4: cut to 20x20
    data = PairedFolder(tmp_path / "lr", tmp_path / "hr", scale=4)
    assert [data[i]["name"] for i in range(len(data))] == ["0801", "Canon_001"]
    item = data[1]
    assert item["hr"].shape == (3, 24, 32) and torch.equal(item["lr"], _tensor(lr_arr))
    assert data[0]["hr"].shape == (3, 20, 20)

    _save(tmp_path / "hr" / "0801.png", 40, 40)
    with pytest.raises(ValueError, match=r"HR .*0801\.png is 40x40 but LR .*0801x4\.png is 5x5"):
        PairedFolder(tmp_path / "lr", tmp_path / "hr", scale=4)


def test_paired_folder_reports_unpaired_files_and_reads_realsr_layout(tmp_path):
    _save(tmp_path / "lr" / "a_LR4.png", 4, 4)
    _save(tmp_path / "hr" / "b_HR.png", 16, 16)
    with pytest.raises(ValueError, match=r"no partner .*a_LR4\.png"):
        PairedFolder(tmp_path / "lr", tmp_path / "hr")
    both = tmp_path / "Canon" / "Test" / "4"  # RealSR v3: LR and HR side by side
    _save(both / "Canon_001_HR.png", 16, 16)
    _save(both / "Canon_001_LR4.png", 4, 4)
    data = PairedFolder(both, both, scale=4)
    assert len(data) == 1 and data[0]["hr"].shape == (3, 16, 16)


# ---- SRDataModule ------------------------------------------------------------------------------


def _module(**kwargs) -> SRDataModule:
    options: dict[str, Any] = {"crop": 48, "batch_size": 2, "samples_per_epoch": 4, "val_crop": 32}
    return SRDataModule(**(options | kwargs))


def test_bicubic_module_yields_the_documented_batches():
    dm = _module()
    dm.setup()
    train = next(iter(dm.train_dataloader()))
    assert set(train) == {"hr", "lr", "name"}
    assert train["hr"].shape == (2, 3, 48, 48) and train["lr"].shape == (2, 3, 12, 12)
    assert isinstance(train["name"], list) and isinstance(train["name"][0], str)
    val = next(iter(dm.val_dataloader()))
    assert val["hr"].shape == (2, 3, 32, 32) and val["lr"].shape == (2, 3, 8, 8)
    assert val["name"] == list(EMBEDDED_VAL)
    test = list(dm.test_dataloader())
    assert [b["name"][0] for b in test] == list(EMBEDDED_VAL)
    assert test[0]["hr"].shape == (1, 3, 300, 448) and test[0]["lr"].shape == (1, 3, 75, 112)
    for batch in (train, val, test[0]):
        assert batch["hr"].dtype == torch.float32
        assert 0 <= batch["lr"].min() <= batch["lr"].max() <= 1


def test_realesrgan_module_degrades_after_transfer_reproducibly():
    dm = _module(degradation="realesrgan")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert "lr" not in batch
    first = dm.on_after_batch_transfer(batch, 0)
    assert first["lr"].shape == (2, 3, 12, 12) and first["hr"] is batch["hr"]
    second = dm.on_after_batch_transfer(batch, 0)  # batch counter 1: another degradation
    assert not torch.equal(first["lr"], second["lr"])

    again = _module(degradation="realesrgan")
    again.setup("fit")
    assert torch.equal(again.on_after_batch_transfer(batch, 0)["lr"], first["lr"])
    resumed = _module(degradation="realesrgan")
    resumed.load_state_dict(dm.state_dict())  # counter 2 -> the third degradation
    assert resumed.realesrgan_batches == 2
    third = dm.on_after_batch_transfer(batch, 0)["lr"]
    assert torch.equal(resumed.on_after_batch_transfer(batch, 0)["lr"], third)

    val = next(iter(dm.val_dataloader()))
    torch.testing.assert_close(dm.on_after_batch_transfer(val, 0)["lr"], val["lr"])


def test_module_reads_folders_and_a_paired_test_set(tmp_path):
    for i in range(2):
        _save(tmp_path / "train" / f"t{i}.png", 64, 80, seed=i)
    _save(tmp_path / "val" / "v.png", 40, 40, seed=5)
    _save(tmp_path / "lr" / "p_LR4.png", 8, 10, seed=6)
    _save(tmp_path / "hr" / "p_HR.png", 32, 40, seed=7)
    dm = _module(
        train_hr=str(tmp_path / "train"),
        val_hr=str(tmp_path / "val"),
        test_lr=str(tmp_path / "lr"),
        test_hr=str(tmp_path / "hr"),
    )
    dm.setup()
    assert next(iter(dm.train_dataloader()))["name"] == ["t0", "t1"]
    assert next(iter(dm.val_dataloader()))["name"] == ["v"]
    test = next(iter(dm.test_dataloader()))
    assert test["name"] == ["p"] and test["lr"].shape == (1, 3, 8, 10)


def test_module_rejects_bad_options():
    with pytest.raises(ValueError, match=r"unknown degradation 'bsrgan'; choose one of"):
        _module(degradation="bsrgan")
    with pytest.raises(ValueError, match="crop must be a positive multiple of scale 4"):
        _module(crop=50)
    with pytest.raises(ValueError, match="use crop >= 44"):
        _module(crop=32, degradation="realesrgan")
    with pytest.raises(ValueError, match="both test_lr and test_hr"):
        _module(test_lr="somewhere")


def test_fit_runs_with_realesrgan_batches_made_on_device():
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Conv2d(3, 3 * 16, 3, padding=1)
            self.seen: list[tuple[int, ...]] = []
            self.crops: list[torch.Tensor] = []

        def forward(self, lr):
            return torch.nn.functional.pixel_shuffle(self.net(lr), 4)

        def training_step(self, batch, batch_idx):
            self.seen.append(tuple(batch["lr"].shape))
            self.crops.append(batch["hr"])
            return (self(batch["lr"]) - batch["hr"]).abs().mean()

        def validation_step(self, batch, batch_idx):
            loss = (self(batch["lr"]) - batch["hr"]).abs().mean()
            self.log("val/l1", loss, batch_size=batch["hr"].shape[0])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    model = Tiny()
    dm = _module(degradation="realesrgan")
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    assert model.seen == [(2, 3, 12, 12)] * 4
    assert dm.realesrgan_batches == 4
    # Lightning set the sampler's epoch: the second epoch trained on new crops.
    loader = trainer.train_dataloader
    assert isinstance(loader, DataLoader) and isinstance(loader.sampler, EpochSampler)
    assert loader.sampler.epoch == 1
    assert not torch.equal(model.crops[0], model.crops[2])

import torch

from onestep.core.data.digits import DigitsDataModule, load_digits_tensor


def test_shapes_range_and_labels():
    x, y = load_digits_tensor()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.int64
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert sorted(y.unique().tolist()) == list(range(10))


def test_upsampled_size():
    x, _ = load_digits_tensor(size=16, split="val")
    assert x.shape[1:] == (1, 16, 16)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0


def test_split_is_deterministic_and_disjoint():
    x_all, _ = load_digits_tensor()
    tr1, ytr1 = load_digits_tensor(split="train", val_fraction=0.2, seed=3)
    tr2, ytr2 = load_digits_tensor(split="train", val_fraction=0.2, seed=3)
    va, yva = load_digits_tensor(split="val", val_fraction=0.2, seed=3)
    other, _ = load_digits_tensor(split="val", val_fraction=0.2, seed=4)
    torch.testing.assert_close(tr1, tr2)
    torch.testing.assert_close(ytr1, ytr2)
    assert tr1.shape[0] + va.shape[0] == x_all.shape[0]
    assert va.shape[0] == round(0.2 * 1797)
    assert not torch.equal(va, other)  # another seed, another split
    # train and val together are a permutation of the full set (compare flattened rows sorted)
    joined = torch.cat([tr1, va]).flatten(1)
    key = lambda t: t.sum(1) * 1e3 + t[:, 20] * 7 + t[:, 35]  # noqa: E731
    torch.testing.assert_close(key(joined).sort().values, key(x_all.flatten(1)).sort().values)
    assert sorted(yva.unique().tolist()) == list(range(10))


def test_bad_arguments():
    import pytest

    with pytest.raises(ValueError, match="split"):
        load_digits_tensor(split="test")
    with pytest.raises(ValueError, match="val_fraction"):
        load_digits_tensor(val_fraction=1.0)


def test_datamodule_batches():
    dm = DigitsDataModule(batch_size=64, val_fraction=0.1, seed=0)
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (64, 1, 8, 8) and labels.shape == (64,)
    val_a = torch.cat([b[0] for b in dm.val_dataloader()])
    dm2 = DigitsDataModule(batch_size=32, val_fraction=0.1, seed=0)
    dm2.setup("fit")
    val_b = torch.cat([b[0] for b in dm2.val_dataloader()])
    torch.testing.assert_close(val_a, val_b)
    first_a = next(iter(dm.train_dataloader()))[1]
    first_b = next(iter(dm.train_dataloader()))[1]
    torch.testing.assert_close(first_a, first_b)  # seeded shuffle

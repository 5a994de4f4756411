"""onestep-sr's stack: torchvision loads beside the PyPI torch and resizes images."""

import torch


def test_torchvision_resize_beside_torch():
    from torchvision.transforms.functional import InterpolationMode, resize

    img = torch.rand(1, 3, 16, 16)
    small = resize(img, [4, 4], interpolation=InterpolationMode.BICUBIC, antialias=True)
    assert small.shape == (1, 3, 4, 4)
    # Area-like downsampling keeps the mean brightness.
    assert abs(float(small.mean() - img.mean())) < 0.05

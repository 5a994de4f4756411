"""Where a method works: pixels (tiny runs) or a VAE latent (real runs), behind one interface.

Every SR method here maps the *upsampled* LR image, encoded, to the encoded HR image:
``z_H = student(encode(upsample(lr)))``, ``sr = decode(z_H)``. A space says how to encode and
decode and how much it shrinks the grid (:attr:`factor`: 1 for pixels, 8 for an SD VAE).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["PixelSpace", "Space"]


class Space(nn.Module):
    """``encode(img [B, 3, H, W] in [0, 1]) -> z [B, C, H / f, W / f]`` and back."""

    factor: int = 1
    channels: int = 3

    def encode(self, img: Tensor) -> Tensor:  # pragma: no cover - interface
        """Image in [0, 1] to the space."""
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:  # pragma: no cover - interface
        """The space back to an image (not clamped: losses see the raw decode)."""
        raise NotImplementedError


class PixelSpace(Space):
    """Pixels rescaled to [-1, 1], the data range diffusion models are trained in."""

    def encode(self, img: Tensor) -> Tensor:
        """``2 img - 1``."""
        return img * 2.0 - 1.0

    def decode(self, z: Tensor) -> Tensor:
        """``(z + 1) / 2``."""
        return (z + 1.0) / 2.0

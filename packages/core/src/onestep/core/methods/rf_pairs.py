"""Teacher couplings ``(z, x0 = ODE(z))`` for reflow, InstaFlow and knowledge distillation.

Reflow (Liu et al. 2023, sec. 2.3, eq. 6) and KD (Luhman & Luhman 2021) train on the endpoints
of the teacher's probability-flow ODE. They are generated once (the expensive part, ``steps``
teacher evaluations per pair), optionally cached to a safetensors file, and served as a plain
dataset. k-rectified flow repeats the round with the last reflowed model as the teacher.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from onestep.core.sampling import ode_pairs

__all__ = ["PairsDataModule", "PairsDataset", "teacher_pairs"]


@torch.no_grad()
def teacher_pairs(
    teacher: nn.Module,
    shape: Sequence[int],
    num_pairs: int,
    *,
    steps: int = 32,
    solver: str = "heun",
    seed: int = 0,
    chunk: int = 4096,
) -> tuple[Tensor, Tensor]:
    """``num_pairs`` couplings of ``teacher``'s ODE, ``(z, x0)`` each ``[num_pairs, *shape]``.

    Args:
        teacher: Denoiser-like ``teacher(x_t, t, cond) -> x0`` with a ``process``.
        shape: shape of one sample.
        num_pairs: number of pairs.
        steps: solver steps (see :func:`onestep.core.sampling.ode_pairs`).
        solver: ``euler`` (= ``ddim``), ``heun`` or ``dpm++2m``.
        seed: seed of the noise ``z``.
        chunk: pairs per teacher solve (bounds memory).
    """
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
    was_training = teacher.training
    teacher.eval()
    z = torch.randn(num_pairs, *shape, generator=torch.Generator().manual_seed(seed))
    device = next((p.device for p in teacher.parameters()), torch.device("cpu"))
    x0 = torch.cat(
        [ode_pairs(teacher, zc.to(device), steps, solver=solver)[1].cpu() for zc in z.split(chunk)]  # pyright: ignore[reportArgumentType]
    )
    teacher.train(was_training)
    return z, x0.to(z.dtype)


class PairsDataset(Dataset):
    """Items ``{"z": [*shape], "x0": [*shape]}`` from two aligned tensors."""

    def __init__(self, z: Tensor, x0: Tensor):
        if z.shape != x0.shape:
            raise ValueError(f"z and x0 must share one shape, got {tuple(z.shape)}, {x0.shape}")
        self.z, self.x0 = z, x0

    def __len__(self) -> int:
        return self.z.shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"z": self.z[index], "x0": self.x0[index]}


class PairsDataModule(L.LightningDataModule):
    """Teacher couplings as training data (reflow, InstaFlow distillation, KD).

    Args:
        teacher: Denoiser-like teacher whose ODE makes the pairs (frozen here; not trained).
        shape: shape of one sample, e.g. ``[2]``.
        num_pairs: pairs generated once.
        batch_size: pairs per batch.
        steps: teacher solver steps.
        solver: teacher solver (``euler``, ``heun``, ``dpm++2m``).
        seed: seed of the noise and of the shuffling.
        cache_path: optional ``*.safetensors`` file: loaded when it exists (and matches
            ``num_pairs`` and ``shape``), else written after generation.
    """

    def __init__(
        self,
        teacher: nn.Module,
        shape: list[int],
        num_pairs: int = 1024,
        batch_size: int = 128,
        steps: int = 32,
        solver: str = "heun",
        seed: int = 0,
        cache_path: str | None = None,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.teacher = teacher.requires_grad_(False)
        self.shape, self.num_pairs, self.batch_size = list(shape), num_pairs, batch_size
        self.steps, self.solver, self.seed, self.cache_path = steps, solver, seed, cache_path
        self.dataset: PairsDataset | None = None

    def _load(self) -> PairsDataset | None:
        if self.cache_path is None or not Path(self.cache_path).exists():
            return None
        tensors = load_file(self.cache_path)
        expected = (self.num_pairs, *self.shape)
        if tuple(tensors["z"].shape) != expected:
            raise ValueError(
                f"cached pairs {self.cache_path} have shape {tuple(tensors['z'].shape)}, expected "
                f"{expected}; delete the file or point cache_path elsewhere"
            )
        return PairsDataset(tensors["z"], tensors["x0"])

    def setup(self, stage: str | None = None) -> None:
        """Load the cached pairs, or generate (and cache) them."""
        if self.dataset is not None:
            return
        self.dataset = self._load()
        if self.dataset is None:
            z, x0 = teacher_pairs(
                self.teacher,
                self.shape,
                self.num_pairs,
                steps=self.steps,
                solver=self.solver,
                seed=self.seed,
            )
            self.dataset = PairsDataset(z, x0)
            if self.cache_path is not None:
                Path(self.cache_path).parent.mkdir(parents=True, exist_ok=True)
                save_file({"z": z.contiguous(), "x0": x0.contiguous()}, self.cache_path)

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of pairs (seeded)."""
        self.setup()
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.dataset,  # pyright: ignore[reportArgumentType]
            batch_size=self.batch_size,
            shuffle=True,
            generator=generator,
        )

"""What every trajectory method's 2-D benchmark trainer returns, and the teacher they share.

A trainer (``bench/traj_<family>.py``) distils (or trains, for CT) a few-step generator against
the exact 8-mode ring teacher and hands back a :class:`TrajResult`: a callable that turns standard
normal latents into samples with a given number of network evaluations, so the benchmark
(:mod:`onestep.core.bench.trajectory`) scores every method at 1 and 2 NFE on the same latents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from onestep.core.bench.gmm_train import flush_denormals
from onestep.core.data.gmm import GaussianMixture, GMMDenoiser
from onestep.core.metrics import energy_distance, mode_coverage
from onestep.core.noise import NoiseProcess, flow
from onestep.core.sampling import sample

__all__ = ["FewStep", "TrajResult", "ring_goal_scores", "ring_teacher"]

# (eps ~ N(0, I) of shape [B, D], nfe) -> samples [B, D], using exactly nfe network evaluations.
FewStep = Callable[[Tensor, int], Tensor]


@dataclass
class TrajResult:
    """One trained few-step generator.

    Attributes:
        method: its name in tables (``cd``, ``ct``, ``scm``, ``ctm``, ``reflow``, ``meanflow`` ...).
        seed: the training seed.
        generate: ``(eps, nfe) -> x``; must not need gradients (called under ``no_grad``).
        train_s: training wall time in seconds (evaluation excluded).
        steps: optimiser updates of the generator.
        notes: anything a reader of the table must know (e.g. the teacher solver used).
    """

    method: str
    seed: int
    generate: FewStep
    train_s: float
    steps: int
    notes: str = ""


def ring_teacher(process: NoiseProcess | None = None) -> tuple[GaussianMixture, GMMDenoiser]:
    """The benchmark's 8-mode ring (radius 2, std 0.1) and its exact denoiser under ``process``.

    ``process`` defaults to rectified flow; sCM passes :func:`~onestep.core.noise.trig`.
    """
    mixture = GaussianMixture.ring(8)
    return mixture, mixture.denoiser(flow() if process is None else process)


def ring_goal_scores(
    train: Callable[[], TrajResult], nfes: tuple[int, ...] = (1, 2), n: int = 4000
) -> tuple[float, dict[int, tuple[float, bool]]]:
    """Issue #4's goal on fixed latents: ``(teacher 4-step energy, {nfe: (energy, all modes)})``.

    The rectified-flow teacher's Euler-4 and the trained generator see the same ``n`` latents
    (seed 100) and true samples (seed 200); ``train`` runs after the teacher is scored.
    """
    mixture, teacher = ring_teacher()
    eps = torch.randn(n, 2, generator=torch.Generator().manual_seed(100))
    true = mixture.sample(n, torch.Generator().manual_seed(200))
    with flush_denormals(), torch.no_grad():
        teacher_4 = energy_distance(sample(teacher, eps, 4, solver="euler"), true)
    with flush_denormals():
        result = train()
        with torch.no_grad():
            xs = {nfe: result.generate(eps, nfe) for nfe in nfes}
    scores = {
        nfe: (energy_distance(x, true), mode_coverage(x, mixture).all_covered)
        for nfe, x in xs.items()
    }
    return teacher_4, scores

"""Train an agent and score it over a few late evaluations (the demo's and bench's protocol).

One checkpoint's return is a noisy estimate of what a run learnt: on the demo's InvertedPendulum
data, Diffusion-QL's evaluations at iterations 1k..6k of one run read 50, 87, 167, 71, 73, 94.
:func:`fit_and_score` therefore evaluates at ``points`` evenly spaced iterations of the second
half of training (the last is the final one) and pools their episodes
(:func:`~onestep.rl.evaluation.pool_results`); the per-point means stay in the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L

from onestep.rl.agents import OfflineAgent
from onestep.rl.callbacks import EvalCallback
from onestep.rl.evaluation import EvalResult, pool_results
from onestep.rl.training import FitResult, fit_agent

__all__ = ["Scored", "fit_and_score", "late_iterations"]


def late_iterations(iterations: int, points: int) -> list[int]:
    """``points`` iterations spread evenly over the second half of ``iterations``, ending there.

    ``late_iterations(2000, 3) == [1333, 1667, 2000]``; ``points = 1`` is the final iteration.
    """
    if iterations < 1 or points < 1:
        raise ValueError(f"iterations and points must be >= 1, got {iterations} and {points}")
    if points > iterations:
        raise ValueError(f"cannot place {points} evaluations in {iterations} iterations")
    its = [round(iterations * (points + k) / (2 * points)) for k in range(1, points + 1)]
    return sorted({max(i, 1) for i in its})


@dataclass
class Scored:
    """A trained agent, its pooled late evaluation and the mean return at each point."""

    fit: FitResult
    result: EvalResult
    by_iteration: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The pooled result's fields plus ``returns_by_iteration`` and ``train_s``."""
        return {
            **self.result.to_dict(),
            "returns_by_iteration": self.by_iteration,
            "train_s": self.fit.wall_s,
        }


def fit_and_score(
    agent: OfflineAgent,
    datamodule: L.LightningDataModule,
    iterations: int,
    env_id: str,
    episodes: int,
    seed: int = 0,
    points: int = 3,
    checkpoint: str | Path | None = None,
    dataset_metadata: dict[str, Any] | None = None,
    progress: bool = True,
) -> Scored:
    """Fit ``agent`` for ``iterations`` and evaluate it ``episodes`` episodes at each late point.

    Args:
        agent: a fresh agent.
        datamodule: its training data.
        iterations: critic + actor updates.
        env_id: the environment to evaluate in.
        episodes: episodes per evaluation (every point uses the same seeds).
        seed: evaluation seed (episode ``k`` reset with ``seed + k``).
        points: evaluations pooled (see :func:`late_iterations`).
        checkpoint: where to save the final weights.
        dataset_metadata: the dataset's metadata (reference returns).
        progress: Lightning's progress bar.
    """
    if agent.iteration != 0:
        raise ValueError(
            f"fit_and_score needs a fresh agent (iteration 0), got one at iteration "
            f"{agent.iteration}: score a trained agent with onestep.rl.evaluation.evaluate_policy"
        )
    at = late_iterations(iterations, points)
    cb = EvalCallback(
        env_id, episodes=episodes, seed=seed, dataset_metadata=dataset_metadata, at=at
    )
    fit = fit_agent(agent, datamodule, iterations, checkpoint, progress, callbacks=[cb])
    results = [r for _, r in cb.history]
    pooled = pool_results(results, dataset_metadata)
    return Scored(fit, pooled, {it: r.mean_return for it, r in cb.history})

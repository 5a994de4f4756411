"""Train an agent for a number of iterations with Lightning (used by ``demo`` and ``bench``).

One iteration is one critic update and one actor update; Lightning counts two optimizer steps
per iteration, so the trainer runs ``max_steps = 2 * iterations``. The agent's settings start
from :data:`AGENT_DEFAULTS` (what the demo and bench use) and any overrides.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from onestep.rl.agents import AGENTS, OfflineAgent

__all__ = ["AGENT_DEFAULTS", "FitResult", "build_agent", "fit_agent"]

#: Settings per agent for the demo and bench (papers' defaults where they state one; see
#: BENCHMARKS.md for the per-task alphas the bench uses).
AGENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "ofql": {},
    "fql": {},
    "dql": {},
}


@dataclass
class FitResult:
    """A trained agent, its checkpoint (if saved) and the wall time of its training."""

    agent: OfflineAgent
    checkpoint: Path | None
    wall_s: float
    iterations: int


def build_agent(name: str, obs_dim: int, act_dim: int, **overrides: Any) -> OfflineAgent:
    """``AGENTS[name]`` with :data:`AGENT_DEFAULTS` and ``overrides``."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; use one of {sorted(AGENTS)}")
    settings = {**AGENT_DEFAULTS.get(name, {}), **overrides}
    return AGENTS[name](obs_dim=obs_dim, act_dim=act_dim, **settings)


def fit_agent(
    agent: OfflineAgent,
    datamodule: L.LightningDataModule | Any,
    iterations: int,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    callbacks: list[Any] | None = None,
    log_every: int = 100,
) -> FitResult:
    """Train ``agent`` for ``iterations`` iterations on the CPU and save its checkpoint.

    Args:
        agent: a fresh (or resumed) agent.
        datamodule: an :class:`~onestep.rl.data.OfflineDataModule`, the bandit's, or a
            DataLoader of batches.
        iterations: critic + actor updates.
        checkpoint: write the final weights here (``.ckpt``, reloadable with ``load_agent``).
        progress: Lightning's progress bar.
        callbacks: extra Lightning callbacks (e.g. :class:`~onestep.rl.callbacks.EvalCallback`).
        log_every: log the losses every this many iterations.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    trainer = L.Trainer(
        max_steps=2 * iterations,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        log_every_n_steps=log_every,
        callbacks=callbacks or [],
    )
    start = time.perf_counter()
    if isinstance(datamodule, L.LightningDataModule):
        trainer.fit(agent, datamodule=datamodule)
    else:
        trainer.fit(agent, train_dataloaders=datamodule)
    wall = time.perf_counter() - start
    path = None
    if checkpoint is not None:
        path = Path(checkpoint)
        path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(path)
    agent.eval()
    return FitResult(agent, path, wall, iterations)

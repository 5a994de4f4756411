"""``EvalCallback``: roll the agent out in its environment every few iterations while it trains.

Logs ``eval/return`` and, where reference returns exist, ``eval/normalized`` (D4RL score), with
the deterministic protocol of :func:`~onestep.rl.evaluation.evaluate_policy` (episode ``k``
reset with ``seed + k``, a fixed-seed generator for the policy's noise), so curves of two agents
meet the same start states.

Under data parallelism only rank 0 rolls out; the result is broadcast, so every process keeps
the same :attr:`EvalCallback.history` and logs the same value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from onestep.rl.evaluation import EvalResult, evaluate_policy

__all__ = ["EvalCallback", "agent_act_fn"]


def agent_act_fn(agent: Any, seed: int = 0, num_candidates: int | None = None):
    """``obs [1, obs_dim] -> actions [1, act_dim]``: an agent as a numpy policy."""
    generator = torch.Generator().manual_seed(seed)
    device = agent.obs_mean.device

    def act(obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(obs, np.float32).reshape(1, -1), device=device)
        out = agent.act(x, generator=generator, num_candidates=num_candidates)
        return out.cpu().numpy()

    return act


class EvalCallback(Callback):
    """Evaluate every ``every`` iterations (and at the end of training).

    Args:
        env_id: gymnasium id; ``None`` takes the datamodule's ``env_id``.
        every: iterations (critic + actor updates) between evaluations.
        episodes: episodes per evaluation.
        seed: environment and policy-noise seed.
        dataset_metadata: passed to :func:`evaluate_policy` for dataset-based references.
        at: evaluate at exactly these iterations instead of every ``every``.
    """

    def __init__(
        self,
        env_id: str | None = None,
        every: int = 5000,
        episodes: int = 5,
        seed: int = 0,
        dataset_metadata: dict[str, Any] | None = None,
        at: Sequence[int] | None = None,
    ):
        super().__init__()
        if every < 1 or episodes < 1:
            raise ValueError(f"every and episodes must be >= 1, got {every} and {episodes}")
        if at is not None and (not at or min(at) < 1):
            raise ValueError(f"at must list iterations >= 1, got {at}")
        self.env_id, self.every, self.episodes, self.seed = env_id, every, episodes, seed
        self.at = None if at is None else frozenset(int(i) for i in at)
        self.dataset_metadata = dataset_metadata
        self.history: list[tuple[int, EvalResult]] = []

    def _env(self, trainer: L.Trainer) -> str | None:
        if self.env_id is not None:
            return self.env_id
        return getattr(getattr(trainer, "datamodule", None), "env_id", None)

    def _evaluate(self, trainer: L.Trainer, agent: Any, log: bool) -> None:
        env_id = self._env(trainer)
        if env_id is None:
            raise ValueError(
                "EvalCallback needs an environment: pass env_id or use a datamodule with env_id"
            )
        metadata = self.dataset_metadata
        if metadata is None:
            dm = getattr(trainer, "datamodule", None)
            metadata = getattr(getattr(dm, "_dataset", None), "metadata", None)
        result: EvalResult | None = None
        if trainer.is_global_zero:
            act = agent_act_fn(agent, self.seed)
            result = evaluate_policy(
                act, env_id, self.episodes, self.seed, dataset_metadata=metadata
            )
        if trainer.world_size > 1:
            # Every process reaches this iteration together; the others wait for rank 0's
            # result, so all log (and a checkpoint monitor compares) the same value.
            result = trainer.strategy.broadcast(result, src=0)
        if result is None:
            raise RuntimeError("EvalCallback: rank 0's evaluation did not reach this process")
        self.history.append((agent.iteration, result))
        if log:
            agent.log("eval/return", result.mean_return, batch_size=1)
            if result.normalized_mean is not None:
                agent.log("eval/normalized", result.normalized_mean, batch_size=1)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Evaluate after every ``every``-th iteration, or at ``at`` (the agent counts them)."""
        it = pl_module.iteration
        if (it in self.at) if self.at is not None else (it % self.every == 0):
            self._evaluate(trainer, pl_module, log=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        """A last evaluation of the final weights (kept in :attr:`history`, not logged)."""
        if not self.history or self.history[-1][0] != pl_module.iteration:
            self._evaluate(trainer, pl_module, log=False)

"""Side-by-side timing of the agents: one action (batch 1) and one training iteration.

MEASURING.md: same inputs, same thread count, warm-up first, medians of interleaved rounds, so
the ratios (DQL ÷ OFQL) hold on a noisy shared machine. The agents are built at the papers'
network size (3 hidden layers of 256) for the given observation and action sizes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from onestep.core.bench.timing import interleaved_medians
from onestep.rl.bandit import BanditBatches
from onestep.rl.training import build_agent, fit_agent

__all__ = ["time_agents"]


def _ready(name: str, obs_dim: int, act_dim: int, settings: dict[str, Any]) -> Any:
    """An agent attached to a Lightning trainer (two iterations on random data), in train mode."""
    agent = build_agent(name, obs_dim, act_dim, **settings)
    g = torch.Generator().manual_seed(1)
    data = {
        "obs": torch.randn(64, obs_dim, generator=g),
        "action": torch.rand(64, act_dim, generator=g) * 2 - 1,
        "reward": torch.randn(64, generator=g),
        "next_obs": torch.randn(64, obs_dim, generator=g),
        "done": torch.zeros(64),
    }
    loader = DataLoader(BanditBatches(data, batch_size=8), batch_size=None)
    fit_agent(agent, loader, 2, progress=False, log_every=10**9)  # timed steps log nothing
    return agent.train()


def time_agents(
    names: tuple[str, ...],
    obs_dim: int = 11,
    act_dim: int = 3,
    batch_size: int = 256,
    repeats: int = 15,
    settings: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Median ms of ``act`` (batch 1) and of one training iteration per agent, interleaved.

    DQL's ``act`` is timed twice: with its paper's candidate selection (``num_candidates``
    samples through the chain, one picked by Q) and as the bare chain (one sample).

    Returns:
        ``{"act_ms": {name: ms, "dql_chain": ms}, "step_ms": {name: ms}, "obs_dim", ...}``.
    """
    settings = settings or {}
    agents = {n: _ready(n, obs_dim, act_dim, settings.get(n, {})) for n in names}
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(1, obs_dim, generator=g)
    batch = {
        "obs": torch.randn(batch_size, obs_dim, generator=g),
        "action": torch.rand(batch_size, act_dim, generator=g) * 2 - 1,
        "reward": torch.randn(batch_size, generator=g),
        "next_obs": torch.randn(batch_size, obs_dim, generator=g),
        "done": torch.zeros(batch_size),
    }
    acts: dict[str, Any] = {n: (lambda a=a: a.act(obs, generator=g)) for n, a in agents.items()}
    if "dql" in agents:
        dql = agents["dql"]
        acts["dql_chain"] = lambda: dql.act(obs, generator=g, num_candidates=1)
    act_ms = interleaved_medians(acts, repeats=repeats, inner=10)
    steps = {n: (lambda a=a: a.training_step(batch, 0)) for n, a in agents.items()}
    step_ms = interleaved_medians(steps, repeats=repeats, warmup=2, inner=2)
    return {
        "act_ms": act_ms,
        "step_ms": step_ms,
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "candidates": {n: a.hparams["num_candidates"] for n, a in agents.items()},
    }

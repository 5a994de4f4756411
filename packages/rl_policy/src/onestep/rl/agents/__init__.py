"""Offline-RL agents: OFQL (one-step average-velocity policy), FQL and the Diffusion-QL baseline."""

from onestep.rl.agents.base import AGENT_KEY, BATCH_KEYS, Batch, OfflineAgent
from onestep.rl.agents.dql import DQL
from onestep.rl.agents.fql import FQL
from onestep.rl.agents.ofql import OFQL
from onestep.rl.agents.registry import AGENTS, load_agent

__all__ = [
    "AGENTS",
    "AGENT_KEY",
    "BATCH_KEYS",
    "DQL",
    "FQL",
    "OFQL",
    "Batch",
    "OfflineAgent",
    "load_agent",
]

"""Agents by name, and loading any agent checkpoint without knowing its class."""

from __future__ import annotations

from pathlib import Path

import torch

from onestep.rl.agents.base import AGENT_KEY, OfflineAgent
from onestep.rl.agents.dql import DQL
from onestep.rl.agents.fql import FQL
from onestep.rl.agents.ofql import OFQL

__all__ = ["AGENTS", "load_agent"]

AGENTS: dict[str, type[OfflineAgent]] = {"ofql": OFQL, "fql": FQL, "dql": DQL}


def load_agent(path: str | Path) -> OfflineAgent:
    """The agent saved in a Lightning checkpoint, on the CPU, in eval mode.

    The checkpoint names its agent class (``checkpoint["onestep_rl_agent"]``, written by
    :meth:`OfflineAgent.on_save_checkpoint`); that class's ``load_from_checkpoint`` rebuilds it.

    Args:
        path: a ``.ckpt`` file written while training an onestep-rl agent.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not an onestep-rl agent checkpoint, or names an unknown agent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a non-torch file, or a pickle with arbitrary objects
        raise ValueError(
            f"{path} is not a Lightning checkpoint of an onestep-rl agent: {err}"
        ) from err
    name = checkpoint.get(AGENT_KEY) if isinstance(checkpoint, dict) else None
    if name is None:
        raise ValueError(
            f"{path} is not an onestep-rl agent checkpoint (no {AGENT_KEY!r} entry); expected a "
            f".ckpt written by Trainer.fit on one of {sorted(AGENTS)}"
        )
    if name not in AGENTS:
        raise ValueError(
            f"{path} holds agent {name!r}, which this version does not know "
            f"(known: {sorted(AGENTS)})"
        )
    agent = AGENTS[name].load_from_checkpoint(path, map_location="cpu")
    return agent.eval()

"""``onestep-rl bench --alpha ofql=10,dql=3``: each agent's policy-loss weight for one run.

``alpha`` means what each agent's paper means by it (:class:`~onestep.rl.agents.base.OfflineAgent`):
the weight of the normalised Q term for OFQL and DQL (Diffusion-QL's ``eta``, default 1), the
weight of the distillation term for FQL (default 10). The papers set it per task, so a fair
comparison on a new dataset sweeps it for every agent; this option names the value per agent so
that each point of such a sweep is one bench run (``--data`` shares the collected data).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence

__all__ = ["alpha_phrase", "default_alpha", "parse_alpha"]


def default_alpha(name: str) -> float | None:
    """Agent ``name``'s own ``alpha``: its constructor's default (None: no such agent)."""
    from onestep.rl.agents import AGENTS  # torch and Lightning: only when a report is written

    if name not in AGENTS:
        return None
    return inspect.signature(AGENTS[name]).parameters["alpha"].default


def parse_alpha(text: str, agents: Sequence[str]) -> dict[str, float]:
    """``"ofql=10,dql=3"`` → ``{"ofql": 10.0, "dql": 3.0}``; agents not named keep their own.

    Refuses an agent not in ``agents``, a name given twice, and a value that is not a finite
    number >= 0 (0 is plain behaviour cloning for OFQL and DQL).
    """
    alphas: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not name:
            raise ValueError(f"use agent=value pairs, e.g. ofql=10,dql=3; got {part!r}")
        if name not in agents:
            raise ValueError(f"{name!r} is not among the agents run ({', '.join(agents)})")
        if name in alphas:
            raise ValueError(f"{name!r} is given twice")
        try:
            alpha = float(value)
        except ValueError:
            raise ValueError(f"{name}'s alpha must be a number, got {value!r}") from None
        if not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"{name}'s alpha must be a finite number >= 0, got {value!r}")
        alphas[name] = alpha
    if not alphas:
        raise ValueError(f"no agent=value pair in {text!r}")
    return alphas


def alpha_phrase(alphas: Mapping[str, float] | None, agents: Sequence[str]) -> str:
    """The report's sentence naming every agent's ``alpha`` in this run."""
    alphas = alphas or {}
    values = {a: alphas.get(a, default_alpha(a)) for a in agents}
    if not alphas:
        named = ", ".join(f"{a} {v:g}" for a, v in values.items() if v is not None)
        return f"Policy-loss weight alpha: each agent's default ({named})."
    named = ", ".join(
        f"{a} {v:g}" + ("" if a in alphas else " (default)")
        for a, v in values.items()
        if v is not None
    )
    return f"Policy-loss weight alpha (`--alpha`): {named}."

"""Each agent's policy-loss weight ``alpha`` in a bench run: per task, as in the papers.

``alpha`` means what each agent's paper means by it (:class:`~onestep.rl.agents.base.OfflineAgent`):
the weight of the normalised Q term for OFQL and DQL (Diffusion-QL's ``eta``, default 1), the
weight of the distillation term for FQL (default 10). The papers set it per task, so in a bench
run each agent's alpha on a dataset is, first found first:

1. ``--alpha ofql=10,dql=3`` (every dataset of the run): one point of a sweep per run, with
   ``--data`` sharing the collected data;
2. the value in the packaged config the dataset names (``DatasetSpec.config``: e.g.
   ``configs/ofql/hopper.yaml``, which carries the Q weight swept on hopper-replay), so the
   bench and ``onestep-rl fit`` train with the same per-task weight from one place;
3. the agent's constructor default.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import TypedDict

__all__ = [
    "AlphaChoice",
    "alpha_phrase",
    "config_alpha",
    "default_alpha",
    "parse_alpha",
    "run_alphas",
]

#: Where each alpha of a run came from, as the report names it.
SOURCES = {
    "--alpha": " (`--alpha`)",
    "config": " (configs/{agent}/{config}.yaml)",
    "default": " (default)",
}


def default_alpha(name: str) -> float | None:
    """Agent ``name``'s own ``alpha``: its constructor's default (None: no such agent)."""
    from onestep.rl.agents import AGENTS  # torch and Lightning: only when a report is written

    if name not in AGENTS:
        return None
    return inspect.signature(AGENTS[name]).parameters["alpha"].default


class AlphaChoice(TypedDict):
    """One agent's alpha on one dataset: the value (None: no such agent) and where it came from."""

    value: float | None
    source: str  # "--alpha", "config" or "default" (:data:`SOURCES`)
    config: str | None  # the config's name where source is "config", else None


def config_alpha(name: str, config: str) -> float | None:
    """``model.init_args.alpha`` of the packaged ``configs/{name}/{config}.yaml``.

    None: no such config, or it leaves alpha at the agent's default.
    """
    import yaml

    path = files("onestep.rl") / "configs" / name / f"{config}.yaml"
    if not path.is_file():
        return None
    model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
    alpha = (model.get("init_args") or {}).get("alpha")
    return None if alpha is None else float(alpha)


def run_alphas(
    agents: Sequence[str], override: Mapping[str, float] | None, config: str | None
) -> dict[str, AlphaChoice]:
    """Each agent's ``{"value", "source"}`` on one dataset.

    ``--alpha`` (``override``), else the dataset's config, else the agent's default.
    """
    chosen: dict[str, AlphaChoice] = {}
    for name in agents:
        from_config = config_alpha(name, config) if config else None
        if override and name in override:
            chosen[name] = {"value": override[name], "source": "--alpha", "config": None}
        elif from_config is not None:
            chosen[name] = {"value": from_config, "source": "config", "config": config}
        else:
            chosen[name] = {"value": default_alpha(name), "source": "default", "config": None}
    return chosen


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


def alpha_phrase(per_dataset: Mapping[str, Mapping[str, AlphaChoice]]) -> str:
    """The report's sentence naming every agent's ``alpha`` on every dataset.

    ``per_dataset``: dataset name → :func:`run_alphas`'s choice. Datasets with the same choice
    share one clause; all defaults read "each agent's default (...)".
    """
    clauses: dict[str, list[str]] = {}
    for dataset, chosen in per_dataset.items():
        clauses.setdefault(_clause(chosen), []).append(dataset)
    if len(clauses) == 1:
        return f"Policy-loss weight alpha: {next(iter(clauses))}."
    parts = [f"{', '.join(names)}: {clause}" for clause, names in clauses.items()]
    return f"Policy-loss weight alpha, per dataset: {'; '.join(parts)}."


def _clause(chosen: Mapping[str, AlphaChoice]) -> str:
    values = {a: c for a, c in chosen.items() if c["value"] is not None}
    if all(c["source"] == "default" for c in values.values()):
        return (
            "each agent's default ("
            + ", ".join(f"{a} {c['value']:g}" for a, c in values.items())
            + ")"
        )
    return ", ".join(
        f"{a} {c['value']:g}" + SOURCES[c["source"]].format(agent=a, config=c["config"])
        for a, c in values.items()
    )

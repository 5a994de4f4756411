"""Mode coverage on Diffusion-QL's 2-D bandit: do one-step and multi-step policies stay multimodal?

Each agent trains on the bandit's behaviour data (:mod:`onestep.rl.bandit`) with a small Q
weight, then samples actions for the single state; :func:`~onestep.rl.bandit.bandit_coverage`
counts the share of actions near each of the four behaviour modes.
"""

from __future__ import annotations

from typing import Any

import torch

from onestep.rl.bandit import BANDIT_MODES, bandit_coverage
from onestep.rl.bandit_data import BanditDataModule
from onestep.rl.training import build_agent, fit_agent

__all__ = ["BANDIT_SETTINGS", "bandit_coverage_run"]

#: Network and loss settings for the bandit (small nets; a small Q weight keeps the BC term
#: in charge, as in Diffusion-QL's toy with a low eta). Measured (tests/rl_policy/test_bandit.py):
#: after 2,000 iterations every mode holds 6-23% of OFQL's and 7-25% of DQL's samples.
BANDIT_SETTINGS: dict[str, Any] = {
    "hidden": 64,
    "depth": 2,
    "alpha": 0.05,
    "actor_lr": 3e-3,
    "critic_lr": 3e-3,
}
BANDIT_ITERATIONS = {"smoke": 2000, "full": 2000}


def bandit_coverage_run(
    names: tuple[str, ...], smoke: bool = False, seed: int = 0, samples: int = 2000
) -> dict[str, Any]:
    """Train each agent on the bandit and measure its mode coverage.

    Returns:
        ``{"modes": [...], "iterations": n, "coverage": {name: {"fractions": [4 floats],
        "all_covered": bool}}}``.
    """
    iterations = BANDIT_ITERATIONS["smoke" if smoke else "full"]
    coverage = {}
    for name in names:
        agent = build_agent(name, 2, 2, seed=seed, **BANDIT_SETTINGS)
        fit_agent(agent, BanditDataModule(seed=seed), iterations, progress=False)
        g = torch.Generator().manual_seed(seed)
        actions = agent.act(torch.zeros(samples, 2), generator=g, num_candidates=1)
        cov = bandit_coverage(actions)
        coverage[name] = {
            "fractions": [float(f) for f in cov.fractions],
            "all_covered": bool(cov.all_covered),
        }
    modes = [f"({x:+.1f}, {y:+.1f})" for x, y in BANDIT_MODES]
    return {
        "modes": modes,
        "iterations": iterations,
        "settings": BANDIT_SETTINGS,
        "coverage": coverage,
    }

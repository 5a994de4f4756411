"""The ``onestep-rl`` command line.

* ``fit | validate | test | predict``: LightningCLI
  (:class:`~onestep.core.lightning_cli.OnestepCLI`) on an agent named by ``--config``
  (``model.class_path``: :class:`~onestep.rl.agents.OFQL`, ``FQL`` or ``DQL``); the data default
  to :class:`~onestep.rl.data.OfflineDataModule` (a Minari folder or D4RL-style HDF5 file), e.g.
  ``onestep-rl fit --config configs/ofql/tiny.yaml``.
* ``evaluate --checkpoint CKPT --env ENV --episodes N``: returns, normalised score, videos
  (:mod:`onestep.rl.cli_evaluate`).
* ``collect --env ENV --behavior random|medium|expert|mixture|replay --steps N --output DIR``:
  write a Minari dataset from a gymnasium environment (:mod:`onestep.rl.collect`).
* ``demo`` and ``bench``: :mod:`onestep.rl.demo` and :mod:`onestep.rl.bench`; ``bench-merge``
  joins bench runs made side by side into one report (:mod:`onestep.rl.bench_merge`).

Lightning, gymnasium and the agents are imported only by the verb that runs, so ``--help``
answers at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onestep.core.cli import domain_cli
from onestep.core.cli_verbs import Verb, lightning_verbs, module_verb, run_domain_lightning

__all__ = ["DIST", "main", "run_rl_lightning"]

DIST = "onestep-rl"
SUMMARY = "one-step flow policies for offline RL (OFQL, FQL, DQL baseline)"
DEFAULT_DATA = "onestep.rl.data.OfflineDataModule"


def run_rl_lightning(argv: Sequence[str]) -> Any:
    """Run ``OnestepCLI`` on ``argv`` with the offline-dataset default; returns the CLI."""
    return run_domain_lightning(DIST, DEFAULT_DATA, argv)


verbs: dict[str, Verb] = lightning_verbs(DIST, DEFAULT_DATA)
verbs["evaluate"] = module_verb("onestep.rl.cli_evaluate")
verbs["collect"] = module_verb("onestep.rl.collect", "collect_main")
verbs["demo"] = module_verb("onestep.rl.demo")
verbs["bench"] = module_verb("onestep.rl.bench")
verbs["bench-merge"] = module_verb("onestep.rl.bench_merge")

main = domain_cli(DIST, SUMMARY, verbs=verbs, planned={})

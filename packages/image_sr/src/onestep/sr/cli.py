"""The ``onestep-sr`` command line.

* ``fit | validate | test | predict``: LightningCLI
  (:class:`~onestep.core.lightning_cli.OnestepCLI`) on any LightningModule named by ``--config``
  (``model.class_path``) or ``--model``; the data default to
  :class:`~onestep.sr.data.SRDataModule` (the embedded photos), e.g.
  ``onestep-sr fit --config configs/teacher/tiny.yaml`` or
  ``onestep-sr test --config cfg.yaml --ckpt_path last.ckpt`` (metrics and strips land in
  ``<log_dir>/test``; see :class:`~onestep.sr.evaluation.SREvaluation`);
  ``predict`` upscales files with ``--data onestep.sr.evaluation.PredictImages``.
* ``upscale INPUT... --model DIR --output DIR``: a saved model folder on image files
  (:mod:`onestep.sr.cli_upscale`).
* ``demo`` and ``bench``: :mod:`onestep.sr.demo` and :mod:`onestep.sr.bench`.

Lightning and the models are imported only by the verb that runs, so ``--help`` answers at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.util import find_spec
from typing import Any

from onestep.core.cli import domain_cli
from onestep.core.cli_verbs import Verb, lightning_verbs, module_verb, run_domain_lightning

__all__ = ["DIST", "PLANNED", "build_main", "main", "run_sr_lightning"]

DIST = "onestep-sr"
SUMMARY = "one-step image super-resolution (OSEDiff-style VSD, CTMSR, TAD-SR)"
PLANNED = "planned in issue #5"
DEFAULT_DATA = "onestep.sr.data.SRDataModule"
#: verbs served by a module's ``main(argv)``, listed as planned while the module is missing.
MODULE_VERBS: dict[str, str] = {"demo": "onestep.sr.demo", "bench": "onestep.sr.bench"}


def run_sr_lightning(argv: Sequence[str]) -> Any:
    """Run ``OnestepCLI`` on ``argv`` (``fit --config ...``) with SR defaults; returns the CLI.

    Any ``LightningModule`` may be named (``model.class_path`` or ``--model``); ``data``
    defaults to ``SRDataModule`` and may be any ``LightningDataModule`` (e.g.
    ``onestep.sr.evaluation.PredictImages`` for ``predict``). Raises ``SystemExit`` for
    ``--help``, ``--print_config`` and parse errors, as LightningCLI does.
    """
    return run_domain_lightning(DIST, DEFAULT_DATA, argv)


def _upscale(args: list[str]) -> int:
    from onestep.sr.cli_upscale import main as upscale_main

    return upscale_main(args)


def _module_exists(module: str) -> bool:
    return find_spec(module) is not None


def build_main(
    available: Callable[[str], bool] = _module_exists,
) -> Callable[[Sequence[str] | None], int]:
    """The console script; ``available(module)`` decides whether demo / bench are built."""
    verbs: dict[str, Verb] = lightning_verbs(DIST, DEFAULT_DATA)
    verbs["upscale"] = _upscale
    planned: dict[str, str] = {}
    for verb, module in MODULE_VERBS.items():
        if available(module):
            verbs[verb] = module_verb(module)
        else:
            planned[verb] = PLANNED
    return domain_cli(DIST, SUMMARY, verbs=verbs, planned=planned)


main = build_main()

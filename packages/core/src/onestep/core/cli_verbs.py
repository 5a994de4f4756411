"""Verbs every domain CLI shares: LightningCLI with a default data module, and module verbs.

A domain package builds its console script from these plus its own verbs::

    verbs = lightning_verbs("onestep-rl", "onestep.rl.bandit_data.BanditDataModule")
    verbs["demo"] = module_verb("onestep.rl.demo")
    main = domain_cli("onestep-rl", "...", verbs=verbs, planned={})

Lightning and the domain's models are imported only by the verb that runs, so ``--help`` answers
at once.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import Any

from onestep.core.cli import LIGHTNING_VERBS

__all__ = ["Verb", "exit_code", "lightning_verbs", "module_verb", "run_domain_lightning"]

Verb = Callable[[list[str]], int]


def run_domain_lightning(dist: str, default_data: str, argv: Sequence[str]) -> Any:
    """Run ``OnestepCLI`` on ``argv`` (``fit --config ...``) with ``data`` defaulting to a class.

    Any ``LightningModule`` may be named (``model.class_path`` or ``--model``) and any
    ``LightningDataModule`` may replace the default. Raises ``SystemExit`` for ``--help``,
    ``--print_config`` and parse errors, as LightningCLI does. Returns the CLI object.
    """
    from lightning.pytorch import LightningDataModule, LightningModule

    from onestep.core.lightning_cli import OnestepCLI

    class DomainCLI(OnestepCLI):
        def add_arguments_to_parser(self, parser: Any) -> None:
            parser.set_defaults({"data": {"class_path": default_data}})

    description = f"{dist} (LightningCLI; data default to {default_data})"
    with warnings.catch_warnings():
        # The console script passes its own argv as ``args``: nothing is mixed up here.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return DomainCLI(
            LightningModule,
            LightningDataModule,
            args=list(argv),
            parser_kwargs={"description": description},
        )


def exit_code(code: object) -> int:
    """A ``SystemExit.code`` or a verb's return value as a process status.

    A message (``SystemExit("...")``) is printed to stderr, as the interpreter would, and gives 1.
    """
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def lightning_verbs(dist: str, default_data: str) -> dict[str, Verb]:
    """``fit | validate | test | predict`` for a domain CLI, each returning the parser's status."""

    def verb_for(verb: str) -> Verb:
        def run(args: list[str]) -> int:
            try:
                run_domain_lightning(dist, default_data, [verb, *args])
            except SystemExit as done:  # --help, --print_config, a config error (already printed)
                return exit_code(done.code)
            return 0

        return run

    return {verb: verb_for(verb) for verb in LIGHTNING_VERBS}


def module_verb(module: str, function: str = "main") -> Verb:
    """A verb served by ``module.function(argv)``, imported only when the verb runs."""

    def run(args: list[str]) -> int:
        try:
            result = getattr(import_module(module), function)(args)
        except SystemExit as done:
            return exit_code(done.code)
        return exit_code(result)

    return run

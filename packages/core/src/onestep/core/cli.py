"""Command lines: the ``onestep`` umbrella and the domain packages' CLI builder.

``onestep fit|validate|test|predict --config cfg.yaml`` trains any LightningModule named by
``class_path`` in the config; ``onestep demo`` runs the first vertical slice on embedded digits;
``onestep info`` lists what is installed. Domain packages build their CLIs with :func:`domain_cli`.
Lightning is imported only by the verbs that need it, so ``--help`` answers at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["LIGHTNING_VERBS", "domain_cli", "main", "run_lightning"]

LIGHTNING_VERBS = ("fit", "validate", "test", "predict")

# Distribution name -> (import name, one-line summary), in the order of ARCHITECTURE.md.
PACKAGES: dict[str, tuple[str, str]] = {
    "onestep-core": ("onestep.core", "noise processes, Denoiser, objectives, samplers, metrics"),
    "onestep-sr": ("onestep.sr", "one-step image super-resolution"),
    "onestep-video": ("onestep.video", "causal few-step video generation"),
    "onestep-audio": ("onestep.audio", "one-step speech and music"),
    "onestep-3d": ("onestep.threed", "one-step 3-D generation"),
    "onestep-rl": ("onestep.rl", "one-step flow policies for offline RL"),
}


def run_lightning(argv: Sequence[str], model_class: Any = None, datamodule_class: Any = None):
    """Run ``OnestepCLI`` on ``argv`` (``fit --config ...``); returns the CLI object."""
    from lightning.pytorch import LightningDataModule, LightningModule

    from onestep.core.lightning_cli import OnestepCLI

    return OnestepCLI(
        model_class or LightningModule,
        datamodule_class or LightningDataModule,
        args=list(argv),
    )


def _installed() -> list[tuple[str, str, str]]:
    rows = []
    for dist, (_module, summary) in PACKAGES.items():
        try:
            rows.append((dist, version(dist), summary))
        except PackageNotFoundError:
            rows.append((dist, "not installed", summary))
    return rows


def _info() -> int:
    print("onestep: one-step generators from multi-step diffusion and flow models\n")
    for dist, ver, summary in _installed():
        print(f"  {dist:<14} {ver:<14} {summary}")
    print("\nonestep verbs: demo, bench, fit, validate, test, predict, info  (onestep VERB --help)")
    return 0


USAGE = """usage: onestep {demo,bench,fit,validate,test,predict,info} [options]

onestep: turn multi-step diffusion / flow models into one-step generators.

verbs:
  demo        distil a digits teacher into a one-step student on CPU (writes samples + metrics)
  bench       compare the distillation objectives on an exact teacher (--smoke: about a minute)
  fit         train a method from a config: onestep fit --config cfg.yaml (LightningCLI)
  validate    LightningCLI validate
  test        LightningCLI test
  predict     LightningCLI predict
  info        installed onestep packages and their versions

options:
  -h, --help  show this message
  --version   print onestep-core's version
"""


def main(argv: Sequence[str] | None = None) -> int:
    """The ``onestep`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    verb, rest = args[0], args[1:]
    if verb == "--version":
        from onestep.core import __version__  # "0+source" when run from an uninstalled tree

        print(__version__)
        return 0
    if verb == "info":
        return _info()
    if verb == "demo":
        return import_module("onestep.core.demo").demo_main(rest)
    if verb == "bench":
        return import_module("onestep.core.bench").bench_main(rest)
    if verb in LIGHTNING_VERBS:
        run_lightning([verb, *rest])
        return 0
    print(f"onestep: unknown verb {verb!r}\n\n{USAGE}", file=sys.stderr)
    return 2


def domain_cli(
    dist: str,
    summary: str,
    verbs: Mapping[str, Callable[[list[str]], int]],
    planned: Mapping[str, str],
) -> Callable[[Sequence[str] | None], int]:
    """Build a domain package's console script.

    Args:
        dist: distribution name, e.g. ``"onestep-sr"``.
        summary: one line saying what the package is for.
        verbs: the verbs that work now, each a function taking the remaining arguments.
        planned: verbs that do not exist yet, mapped to where they are tracked; calling one says
            so and exits with status 2 instead of pretending to work.
    """

    def run(argv: Sequence[str] | None = None) -> int:
        args = list(sys.argv[1:] if argv is None else argv)
        ver = version(dist)
        if not args or args[0] in ("-h", "--help", "info"):
            print(f"{dist} {ver}: {summary}\n")
            print("available now:", ", ".join(["info", "--version", *verbs]) or "none")
            if planned:
                print("not yet built (the verb exits with status 2 until it lands):")
                for name, where in planned.items():
                    print(f"  {name:<10} {where}")
            return 0
        verb, rest = args[0], args[1:]
        if verb == "--version":
            print(ver)
            return 0
        if verb in verbs:
            return verbs[verb](rest)
        if verb in planned:
            msg = f"{dist}: '{verb}' is not available in {ver} yet ({planned[verb]})"
            print(msg, file=sys.stderr)
            return 2
        print(f"{dist}: unknown verb {verb!r}; run '{dist} --help'", file=sys.stderr)
        return 2

    return run

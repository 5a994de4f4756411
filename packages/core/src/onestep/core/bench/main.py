"""Command line of ``onestep bench``: parse options, run the parts, write the report, gate.

Exit codes: 0 when every gating check passes (full-budget goals never gate), 1 when a smoke
figure regresses past its tolerance (each failure is printed to stderr as ``FAIL: ...`` beside
its tolerance), 2 for bad options.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from onestep.core.bench.checks import checks_for, known_tolerances
from onestep.core.bench.digits import DigitsBudget, run_digits
from onestep.core.bench.gmm import OBJECTIVES, GMMBudget, run_gmm
from onestep.core.bench.gmm_train import GMMConfig
from onestep.core.bench.report import markdown, write_json, write_plot
from onestep.core.bench.timing import time_dmd2_step

__all__ = ["PARTS", "SMOKE_GMM", "bench_main", "build_parser"]

PARTS: tuple[str, ...] = ("gmm", "timing", "digits", "traj", "digits-traj")
SMOKE_PARTS: tuple[str, ...] = ("gmm", "timing")  # digits needs a trained teacher: minutes
SMOKE_GMM = GMMBudget(
    steps=1500, unbalanced_steps=0, eval_every=500, n_eval=2000, latency_repeats=3
)
SMOKE_TRAJ_STEPS = 1000  # trajectory trainers' updates per smoke run
# the smoke run's trajectory methods: one of each kind (consistency, teacher pairs, MeanFlow's
# jvp target), together ~20 s on one core
SMOKE_TRAJ_METHODS: tuple[str, ...] = ("cd", "kd", "meanflow")
SMOKE_DIGITS = DigitsBudget(
    teacher_steps=300,
    classifier_steps=100,
    student_steps=50,
    fake_steps=2,
    batch_size=64,
    n_eval=256,
)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from err
    if not values:
        raise argparse.ArgumentTypeError("need at least one seed, e.g. --seeds 0,1,2")
    return values


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _tolerance(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or name not in known_tolerances():
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE with NAME in {sorted(known_tolerances())}, got {text!r}"
        )
    try:
        return name, float(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"tolerance {name} needs a number, got {value!r}") from err


def build_parser() -> argparse.ArgumentParser:
    """The ``onestep bench`` argument parser (its help is the CLI's help)."""
    p = argparse.ArgumentParser(
        prog="onestep bench",
        description="Benchmark the core objectives: distribution matching (dmd2, vsd, sid, sim, "
        "fdiv-js) as one-step students of an exact 2-D mixture teacher and of the digits "
        "teacher, and the trajectory family (consistency, flow, CTM, MeanFlow, sCM) at 1 and 2 NFE "
        "on the 2-D mixture and on the digits teacher; "
        "writes bench.md, bench.json, quality_vs_step.png and quality_vs_nfe.png.",
    )
    p.add_argument("--smoke", action="store_true", help="about a minute; fails past tolerances")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    p.add_argument("--output", type=Path, default=Path("onestep-bench"), help="output folder")
    p.add_argument("--seeds", type=_int_list, default=None, help="e.g. 0,1,2 (smoke: 0)")
    p.add_argument(
        "--steps",
        type=_positive,
        default=None,
        help="student updates per 2-D run (and per digits-traj method)",
    )
    p.add_argument(
        "--objectives", default=",".join(OBJECTIVES), help="comma-separated 2-D objectives"
    )
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated trajectory methods (default: all of TRAJ_METHODS; digits-traj: "
        "all of DIGITS_TRAJ_METHODS, and it runs those of the list it has)",
    )
    p.add_argument(
        "--only",
        choices=PARTS,
        action="append",
        default=None,
        help="run only this part (repeatable)",
    )
    p.add_argument(
        "--threads", type=_positive, default=None, help="torch CPU threads (default: torch's)"
    )
    p.add_argument(
        "--jobs",
        type=_positive,
        default=1,
        help="training runs at once, each a single-threaded process (2-D and trajectory parts)",
    )
    p.add_argument(
        "--tolerance",
        type=_tolerance,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a tolerance or goal (see onestep.core.bench.checks)",
    )
    return p


def _machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{os.cpu_count()} CPU cores ({platform.machine()}), {torch.get_num_threads()} torch "
        f"threads, {gpu}, torch {torch.__version__}"
    )


def _gmm_budget(args: argparse.Namespace) -> GMMBudget:
    budget = SMOKE_GMM if args.smoke else GMMBudget()
    if args.steps is not None:
        budget = GMMBudget(
            **{
                **asdict(budget),
                "steps": args.steps,
                "unbalanced_steps": (args.steps if budget.unbalanced_steps else 0),
            }
        )
    return budget


def _run_digits_traj(args: argparse.Namespace) -> dict:
    from onestep.core.bench.digits_traj import (
        DIGITS_TRAJ_METHODS,
        SMOKE_DIGITS_TRAJ,
        DigitsTrajBudget,
        run_digits_traj,
    )

    print("digits-traj: trajectory-family students of the digits teacher at 1 and 2 NFE")
    budget = SMOKE_DIGITS_TRAJ if args.smoke else DigitsTrajBudget()
    if args.steps is not None:
        budget = replace(budget, steps=args.steps)
    wanted = args.methods.split(",") if args.methods else list(DIGITS_TRAJ_METHODS)
    methods = [m for m in wanted if m in DIGITS_TRAJ_METHODS]
    skipped = [m for m in wanted if m and m not in DIGITS_TRAJ_METHODS]
    if skipped:
        print(f"  digits-traj: no digits trainer for {skipped}; skipped")
    return run_digits_traj(budget, methods)


def run(args: argparse.Namespace) -> dict:
    """Run the chosen parts; returns the JSON-ready result."""
    start = time.perf_counter()
    parts = args.only or (SMOKE_PARTS if args.smoke else PARTS)
    seeds = args.seeds or ([0] if args.smoke else [0, 1, 2])
    result: dict = {"smoke": args.smoke, "parts": list(parts)}
    if "gmm" in parts:
        objectives = [o for o in args.objectives.split(",") if o]
        result["gmm"] = run_gmm(_gmm_budget(args), seeds, objectives, jobs=args.jobs)
    if "timing" in parts:
        print("timing: DMD2 step against the sum of its passes")
        cfg = GMMConfig(batch_size=(SMOKE_GMM if args.smoke else GMMBudget()).batch_size)
        t = time_dmd2_step(cfg, repeats=7 if args.smoke else 21)
        result["timing"] = {
            **asdict(t),
            "sum_ms": t.sum_ms,
            "ratio": t.ratio,
            "threads": torch.get_num_threads(),
            "batch_size": cfg.batch_size,
        }
    if "digits" in parts:
        print("digits: DMD2 student against the teacher's samplers")
        result["digits"] = run_digits(SMOKE_DIGITS if args.smoke else DigitsBudget())
    if "traj" in parts:
        from onestep.core.bench.trajectory import TRAJ_METHODS, run_trajectory

        default = SMOKE_TRAJ_METHODS if args.smoke else TRAJ_METHODS
        methods = [m for m in (args.methods or ",".join(default)).split(",") if m]
        steps = SMOKE_TRAJ_STEPS if args.smoke else args.steps
        n_eval = SMOKE_GMM.n_eval if args.smoke else GMMBudget().n_eval
        result["traj"] = run_trajectory(methods, seeds, steps=steps, n_eval=n_eval, jobs=args.jobs)
    if "digits-traj" in parts:
        result["digits-traj"] = _run_digits_traj(args)
    result["machine"] = _machine() + (f", {args.jobs} runs at once" if args.jobs > 1 else "")
    result["date"] = datetime.date.today().isoformat()
    result["wall_s"] = time.perf_counter() - start
    return result


def bench_main(argv: list[str] | None = None) -> int:
    """Entry point of ``onestep bench``; returns the exit code (module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) and bad options (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.output.exists() and not args.output.is_dir():
        print(f"onestep bench: --output {args.output} is a file; pass a folder", file=sys.stderr)
        return 2
    if args.methods is not None:
        from onestep.core.bench.digits_traj import DIGITS_TRAJ_METHODS
        from onestep.core.bench.trajectory import TRAJ_METHODS

        known = set(TRAJ_METHODS) | set(DIGITS_TRAJ_METHODS)
        unknown = [m for m in args.methods.split(",") if m and m not in known]
        if unknown:
            print(
                f"onestep bench: unknown --methods {unknown}; use some of {sorted(known)}",
                file=sys.stderr,
            )
            return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = run(args)
    checks = checks_for(result, args.smoke, dict(args.tolerance))
    command = "onestep bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    args.output.mkdir(parents=True, exist_ok=True)
    text = markdown(result, checks, command.strip())
    (args.output / "bench.md").write_text(text)
    write_json(args.output / "bench.json", result, checks)
    if args.json is not None:
        write_json(args.json, result, checks)
    if "gmm" in result:
        write_plot(args.output / "quality_vs_step.png", result["gmm"])
    if "traj" in result:
        from onestep.core.bench.report_traj import write_nfe_plot

        write_nfe_plot(args.output / "quality_vs_nfe.png", result["traj"], result.get("gmm"))
    print(text)
    failed = [c for c in checks if c.gate and not c.passed]
    for c in failed:
        print(f"onestep bench: {c.line()}", file=sys.stderr)
    return 1 if failed else 0

"""Command line of ``onestep demo``: argument parsing and the phases in order.

1. data: sklearn digits, seeded train / held-out split;
2. classifier (cached) whose penultimate features give the Frechet distance;
3. teacher (cached): rectified-flow denoiser;
4. DMD2 distillation into a one-step student;
5. evaluation (FD, side-by-side latency) and outputs.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from onestep.core.data.digits import load_digits_tensor
from onestep.core.demo import evaluate
from onestep.core.demo.classifier import ClassifierConfig, accuracy, load_or_train_classifier
from onestep.core.demo.dmd2 import DMD2Config, distill
from onestep.core.demo.export import save_student
from onestep.core.demo.teacher import TeacherConfig, load_or_train_teacher

__all__ = ["Budget", "build_parser", "demo_main"]

SOLVER = "dpm++2m"
VAL_FRACTION = 0.2


@dataclass(frozen=True)
class Budget:
    """Training and evaluation sizes of one demo run.

    Args:
        teacher_steps: teacher training iterations.
        classifier_steps: classifier training iterations.
        student_steps: DMD2 student updates.
        fake_steps: fake-score updates per student update.
        batch_size: batch of every training phase.
        n_eval: samples per FD row (at most the held-out split).
        latency_batch: samples per timed generator call.
        repeats: timed repeats per generator (median reported).
    """

    teacher_steps: int = 4000
    classifier_steps: int = 800
    student_steps: int = 3000
    fake_steps: int = 5
    batch_size: int = 128
    n_eval: int = 10_000
    latency_batch: int = 64
    repeats: int = 7


QUICK = Budget(
    teacher_steps=150,
    classifier_steps=100,
    student_steps=10,
    fake_steps=2,
    batch_size=32,
    n_eval=128,
    latency_batch=16,
    repeats=2,
)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``onestep demo`` argument parser (its help is the CLI's help)."""
    p = argparse.ArgumentParser(
        prog="onestep demo",
        description="Distill a digits diffusion teacher into a one-step student with DMD2, "
        "then compare quality (Frechet distance) and latency. Runs on a CPU in minutes.",
    )
    p.add_argument("--output", type=Path, default=Path("onestep-demo"), help="output folder")
    p.add_argument(
        "--teacher-steps",
        type=_positive,
        default=None,
        help=f"teacher training iterations (default {Budget.teacher_steps}, "
        f"quick {QUICK.teacher_steps})",
    )
    p.add_argument(
        "--student-steps",
        type=_non_negative,
        default=None,
        help=f"DMD2 distillation iterations (default {Budget.student_steps}, "
        f"quick {QUICK.student_steps})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every phase (default 0)")
    p.add_argument(
        "--device", default="cpu", help="cpu (default), cuda or cuda:N (must be available)"
    )
    p.add_argument(
        "--retrain", action="store_true", help="ignore the cached teacher and classifier"
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny budget for smoke tests (well under a minute)"
    )
    p.add_argument(
        "--threads", type=_positive, default=None, help="torch CPU threads (default: torch's)"
    )
    return p


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> torch.device:
    """Validate what argparse cannot; exits with code 2 and a message naming the fix."""
    if args.output.exists() and not args.output.is_dir():
        parser.error(f"--output {args.output} is an existing file; pass a folder path")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"unknown --device {args.device!r}; use cpu, cuda or cuda:N")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"unsupported --device {args.device!r}; use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device} asked for, but CUDA is not available; use cpu")
    return device


def _budget(args: argparse.Namespace) -> Budget:
    base = QUICK if args.quick else Budget()
    overrides = {}
    if args.teacher_steps is not None:
        overrides["teacher_steps"] = args.teacher_steps
    if args.student_steps is not None:
        overrides["student_steps"] = args.student_steps
    return Budget(**{**asdict(base), **overrides})


def _evaluate(out: Path, teacher, student, classifier, data, budget: Budget, seed: int) -> list:
    """FD and latency rows; writes ``samples.png``."""
    x_train, x_val = data
    device = x_train.device
    n = min(budget.n_eval, x_val.shape[0])
    ref = classifier.features(x_train)
    z = torch.randn((n, *x_train.shape[1:]), generator=torch.Generator().manual_seed(seed + 1))
    z = z.to(device)
    gens = evaluate.generators(teacher, student, SOLVER)
    with torch.no_grad():
        samples = {g.name: g.fn(z) for g in tqdm(gens, desc="evaluate", leave=False)}
        z_lat = z[: budget.latency_batch]
        lat = evaluate.median_latency_ms([lambda g=g: g.fn(z_lat) for g in gens], budget.repeats)
    base = lat[0]  # teacher 50-step
    rows = [
        evaluate.Row(
            g.name, g.nfe, evaluate.fd(classifier.features, samples[g.name], ref), ms, base / ms
        )
        for g, ms in zip(gens, lat, strict=True)
    ]
    rows.append(
        evaluate.Row("real held-out digits", 0, evaluate.fd(classifier.features, x_val[:n], ref))
    )
    panels = [("real (held-out)", x_val[:64])]
    panels += [(g.name.replace(f" ({SOLVER})", ""), samples[g.name][:64]) for g in gens]
    evaluate.save_grid(out / "samples.png", panels)
    return rows


def run(args: argparse.Namespace, device: torch.device) -> dict:
    """Run every phase; returns the metrics payload."""
    start = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    budget = _budget(args)
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    split = {"val_fraction": VAL_FRACTION, "seed": args.seed}
    x_train, y_train = (t.to(device) for t in load_digits_tensor(split="train", **split))
    x_val, y_val = (t.to(device) for t in load_digits_tensor(split="val", **split))
    print(f"digits: {x_train.shape[0]} train / {x_val.shape[0]} held-out images, device {device}")

    c_cfg = ClassifierConfig(steps=budget.classifier_steps, seed=args.seed)
    classifier, _ = load_or_train_classifier(c_cfg, x_train, y_train, retrain=args.retrain)
    acc = accuracy(classifier, x_val, y_val)
    t_cfg = TeacherConfig(steps=budget.teacher_steps, batch_size=budget.batch_size, seed=args.seed)
    teacher, teacher_cached = load_or_train_teacher(t_cfg, x_train, retrain=args.retrain)
    d_cfg = DMD2Config(
        steps=budget.student_steps,
        fake_steps=budget.fake_steps,
        batch_size=budget.batch_size,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    student, losses = distill(teacher, d_cfg)
    distill_s = time.perf_counter() - t0
    print(f"distilled the one-step student with DMD2: {d_cfg.steps} steps in {distill_s:.1f} s")

    rows = _evaluate(out, teacher, student, classifier, (x_train, x_val), budget, args.seed)
    save_student(out, student, t_cfg, {"dmd2": asdict(d_cfg)})
    notes = [
        f"FD: Frechet distance to the {x_train.shape[0]} training digits in the 64-d penultimate "
        f"features of DigitsClassifier (small conv net, held-out accuracy {acc:.1%}); "
        f"{min(budget.n_eval, x_val.shape[0])} samples per row, "
        f"fixed latents (seed {args.seed + 1}).",
        f"Latency: batch of {budget.latency_batch}, median of {budget.repeats} interleaved rounds "
        "after a warm-up (fast calls repeated within a round), "
        f"{torch.get_num_threads()} torch threads, device {device}; "
        "speed-up is relative to the teacher's 50-step solve.",
        f"Teacher: rectified flow, flow prediction, solver {SOLVER} (1 step: Euler = DDIM).",
    ]
    meta = {
        "wall_s": time.perf_counter() - start,
        "distill_s": distill_s,
        "teacher_cached": teacher_cached,
        "classifier_accuracy": acc,
        "feature_network": "DigitsClassifier penultimate layer (64-d)",
        "solver": SOLVER,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "budget": asdict(budget),
        "teacher": asdict(t_cfg),
        "dmd2": asdict(d_cfg),
        "final_dmd_loss": losses[-1] if losses else None,
    }
    table = evaluate.write_metrics(out, rows, meta, notes)
    print(table)
    print("\n".join(notes))
    print(f"wrote {out}/samples.png, metrics.md, metrics.json, student.safetensors, student.json")
    print(f"demo wall time {meta['wall_s']:.1f} s")
    return json.loads((out / "metrics.json").read_text())


def demo_main(argv: list[str] | None = None) -> int:
    """Entry point of ``onestep demo``; returns the exit code (2 for bad options)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        device = _check(parser, args)
    except SystemExit as exit_:  # --help (0) and bad options (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    run(args, device)
    return 0

"""``onestep-sr bench``: bicubic, the teacher at 1 / 4 / 50 steps and every one-step student.

One run, same data, crops and seed for every student: PSNR / SSIM (Y channel, border = scale) on
the held-out embedded photos at ``x4``, latency per image, the teacher-50 / student-1 latency
ratio (goal >= 40), and the peak memory of ``upscale`` with tiling versus without (each in its
own process). ``--smoke`` uses tiny budgets and exits 1 if a figure misses its smoke gate:
the OSEDiff student must beat bicubic on PSNR, the latency ratio must reach 20 (half the goal:
CI machines are noisy), and tiling must use less memory than no tiling.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onestep.sr.demo import heldout_pairs
from onestep.sr.pipeline import (
    STUDENTS,
    TeacherConfig,
    load_or_train_teacher,
    threads,
    train_student,
)
from onestep.sr.resolver import Bicubic

__all__ = ["build_parser", "main"]

SMOKE_TEACHER = TeacherConfig(crop=32, batch_size=8, steps=300, widths=(16, 32, 32))
LATENCY_GOAL, SMOKE_LATENCY_GATE = 40.0, 20.0


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options."""
    p = argparse.ArgumentParser(
        prog="onestep-sr bench", description=(__doc__ or "").split("\n", 1)[0]
    )
    p.add_argument("--output", type=Path, default=Path("runs/bench/sr"), help="output folder")
    p.add_argument("--smoke", action="store_true", help="tiny budgets and pass/fail gates (CI)")
    p.add_argument("--methods", default=",".join(STUDENTS), help="students, comma-separated")
    p.add_argument("--student-steps", type=int, default=None, help="steps per student")
    p.add_argument("--memory-size", type=int, default=None, help="LR side of the memory test")
    p.add_argument("--tile", type=int, default=512, help="output tile of the memory test")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def memory(model: Path, size: int, tile: int | None, n_threads: int | None) -> dict[str, Any]:
    """Peak memory of one ``upscale`` call, measured in a fresh process."""
    cmd = [sys.executable, "-m", "onestep.sr.bench_memory", "--model", str(model)]
    cmd += ["--size", str(size)] + (["--tile", str(tile)] if tile else [])
    cmd += ["--threads", str(n_threads)] if n_threads else []
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _added(m: dict[str, float]) -> str:
    return f"{m['peak_mib'] - m['baseline_mib']:.0f}"


def report(results: dict[str, Any]) -> str:
    """The markdown report."""
    means = results["means"]
    lines = [
        "# onestep-sr bench",
        "",
        f"Held-out embedded photos at x{results['scale']}; teacher {results['teacher']['steps']} "
        f"steps, students {results['student_steps']} steps each.",
        "",
        "| method | PSNR (Y) | SSIM (Y) | latency s/image |",
        "|---|---:|---:|---:|",
    ]
    for method, m in means.items():
        lines.append(f"| {method} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['latency_s']:.3f} |")
    mem = results["memory"]
    lines += [
        "",
        f"- Latency teacher 50-step / OSEDiff student 1-step: **{results['latency_ratio']:.1f}x** "
        f"(goal >= {LATENCY_GOAL:.0f}).",
        f"- `upscale` of a {mem['size']}^2 LR input (x{results['scale']} -> "
        f"{mem['size'] * results['scale']}^2), peak RSS of the process: untiled "
        f"{mem['untiled']['peak_mib']:.0f} MiB ({_added(mem['untiled'])} MiB above the model "
        f"and input), tiled ({mem['tile']} px tiles) {mem['tiled']['peak_mib']:.0f} MiB "
        f"({_added(mem['tiled'])} MiB above).",
    ]
    return "\n".join(lines) + "\n"


def gates(results: dict[str, Any]) -> list[str]:
    """Smoke-gate failures (empty: all pass)."""
    means, failures = results["means"], []
    if means["osediff 1-step"]["psnr"] <= means["bicubic"]["psnr"]:
        failures.append("the OSEDiff student does not beat bicubic on PSNR")
    if results["latency_ratio"] < SMOKE_LATENCY_GATE:
        failures.append(f"latency ratio {results['latency_ratio']:.1f} < {SMOKE_LATENCY_GATE}")
    mem = results["memory"]
    added = {k: mem[k]["peak_mib"] - mem[k]["baseline_mib"] for k in ("tiled", "untiled")}
    if added["tiled"] >= added["untiled"]:
        failures.append(f"tiling does not save memory: {added}")
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 1 if a smoke gate fails."""
    from onestep.sr.evaluation import evaluate_resolvers
    from onestep.sr.model_folder import save_resolver

    args = build_parser().parse_args(argv)
    threads(args.threads)
    start = time.perf_counter()
    config = SMOKE_TEACHER if args.smoke else TeacherConfig()
    steps = args.student_steps or (150 if args.smoke else 300)
    methods = [m for m in args.methods.split(",") if m]
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress

    teacher, cached = load_or_train_teacher(config, progress=progress)
    resolvers: dict[str, Any] = {"bicubic": Bicubic(config.scale)}
    for n in (1, 4, 50):
        resolvers[f"teacher {n}-step"] = teacher.resolver(n)
    train_s = {}
    for name in methods:
        t0 = time.perf_counter()
        module = train_student(name, teacher, config, steps, progress=progress)
        train_s[name] = time.perf_counter() - t0
        resolvers[f"{name} 1-step"] = module.resolver()  # pyright: ignore[reportCallIssue]
        save_resolver(resolvers[f"{name} 1-step"], out / "models" / name)
    pairs = heldout_pairs(config.scale)
    rows, means = evaluate_resolvers(resolvers, pairs, out)
    size = args.memory_size or (256 if args.smoke else 512)
    first = out / "models" / methods[0]
    mem = {
        "size": size,
        "tile": args.tile,
        "untiled": memory(first, size, None, args.threads),
        "tiled": memory(first, size, args.tile, args.threads),
    }
    student_key = "osediff 1-step" if "osediff" in methods else f"{methods[0]} 1-step"
    results = {
        "scale": config.scale,
        "teacher": config.__dict__,
        "teacher_cached": cached,
        "student_steps": steps,
        "train_s": train_s,
        "means": means,
        "rows": rows,
        "latency_ratio": means["teacher 50-step"]["latency_s"] / means[student_key]["latency_s"],
        "memory": mem,
        "wall_s": time.perf_counter() - start,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    md = report(results)
    (out / "report.md").write_text(md)
    print(md)
    if args.smoke:
        failures = gates(results)
        for f in failures:
            print(f"SMOKE GATE FAILED: {f}")
        return 1 if failures else 0
    return 0

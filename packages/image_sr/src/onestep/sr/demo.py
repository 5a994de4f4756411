"""``onestep-sr demo``: a one-step super-resolver trained on the embedded photos, on a CPU.

1. teacher (cached in the user cache): the package's LR-conditioned pixel-space diffusion
   teacher, trained on bicubic ``x4`` crops of the embedded training photos;
2. OSEDiff-style student: one network call from the LR image, trained with MSE + the offline
   perceptual substitute + VSD against the teacher;
3. evaluation on the held-out embedded photos: PSNR / SSIM (Y channel) and NIQE of bicubic, the
   teacher at 50 steps and the student at 1 step, with latency; a side-by-side strip;
4. outputs in ``--output``: ``metrics.md`` / ``metrics.csv`` / ``metrics.json``, ``strip_*.png``,
   the student in ``student/`` (so ``onestep-sr upscale --model DIR/student`` uses it) and
   ``upscaled/`` (a held-out photo upscaled by the student).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

from onestep.sr.data import bicubic_downsample, modcrop
from onestep.sr.data.samples import embedded_photo_path, embedded_photos
from onestep.sr.pipeline import TeacherConfig, load_or_train_teacher, threads, train_student
from onestep.sr.resolver import Bicubic

__all__ = ["build_parser", "heldout_pairs", "main"]

QUICK_TEACHER = TeacherConfig(crop=32, batch_size=4, steps=20, widths=(16, 32))


def build_parser() -> argparse.ArgumentParser:
    """The demo's options."""
    p = argparse.ArgumentParser(
        prog="onestep-sr demo", description=(__doc__ or "").split("\n", 1)[0]
    )
    p.add_argument("--output", type=Path, default=Path("onestep-sr-demo"), help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny budgets (a smoke test, not results)")
    p.add_argument("--teacher-steps", type=int, default=None, help="teacher training steps")
    p.add_argument("--student-steps", type=int, default=None, help="student training steps")
    p.add_argument("--teacher-eval-steps", type=int, default=50, help="teacher sampler steps")
    p.add_argument("--retrain-teacher", action="store_true", help="ignore the cached teacher")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def heldout_pairs(scale: int, limit: int | None = None):
    """``(name, lr [1, 3, h, w], hr [1, 3, H, W])`` of each held-out embedded photo (bicubic LR)."""
    pairs = []
    for name, hr in embedded_photos("val")[:limit]:
        hr = modcrop(hr, scale)[None]
        pairs.append((name, bicubic_downsample(hr, scale), hr))
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    from onestep.sr.evaluation import evaluate_resolvers
    from onestep.sr.model_folder import save_resolver
    from onestep.sr.upscale import upscale_files

    args = build_parser().parse_args(argv)
    threads(args.threads)
    start = time.perf_counter()
    config = QUICK_TEACHER if args.quick else TeacherConfig()
    if args.teacher_steps is not None:
        config = TeacherConfig(**{**config.__dict__, "steps": args.teacher_steps})
    student_steps = args.student_steps or (5 if args.quick else 200)
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress

    teacher, cached = load_or_train_teacher(config, retrain=args.retrain_teacher, progress=progress)
    t0 = time.perf_counter()
    student = train_student("osediff", teacher, config, student_steps, progress=progress)
    distill_s = time.perf_counter() - t0
    resolver = student.resolver()  # pyright: ignore[reportCallIssue]
    save_resolver(resolver, out / "student")

    n_steps = 2 if args.quick else args.teacher_eval_steps
    resolvers = {
        "bicubic": Bicubic(config.scale),
        f"teacher {n_steps}-step": teacher.resolver(n_steps),
        "student 1-step": resolver,
    }
    pairs = heldout_pairs(config.scale, limit=1 if args.quick else None)
    rows, means = evaluate_resolvers(resolvers, pairs, out)
    name = pairs[0][0]
    upscale_files(resolver, [embedded_photo_path(name)], out / "upscaled")
    summary = {
        "rows": rows,
        "means": means,
        "teacher_cached": cached,
        "teacher": config.__dict__,
        "student_steps": student_steps,
        "distill_s": distill_s,
        "wall_s": time.perf_counter() - start,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))
    print((out / "metrics.md").read_text())
    print(
        f"student saved to {out / 'student'}; try: onestep-sr upscale IMAGE --model {out}/student"
    )
    return 0

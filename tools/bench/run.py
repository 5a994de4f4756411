"""Run the benchmarks and regenerate BENCHMARKS.md.

    uv run python tools/bench/run.py            # full budgets (the numbers in BENCHMARKS.md)
    uv run python tools/bench/run.py --smoke    # tiny budgets: checks the pipeline, not the figures

Today this runs `onestep demo` (the only benchmark so far); each package's `bench` joins here as it
lands. Numbers are ratios measured side by side in one run (see the team's MEASURING notes); the
machine, date and command are written beside every table.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}"


def run_demo(out: Path, smoke: bool) -> tuple[str, dict]:
    args = ["onestep", "demo", "--output", str(out)] + (["--quick"] if smoke else [])
    subprocess.run(args, check=True, cwd=ROOT)
    metrics = json.loads((out / "metrics.json").read_text())
    return " ".join(["uv run", *args[:2], "--output", "runs/bench/demo"]), metrics


def demo_section(command: str, metrics: dict, md: str) -> str:
    rows = {r["method"]: r for r in metrics["rows"]}
    student = next(r for m, r in rows.items() if m.startswith("student"))
    teacher50 = next(r for m, r in rows.items() if m.startswith("teacher 50"))
    teacher4 = next(r for m, r in rows.items() if m.startswith("teacher 4"))
    verdict = [
        f"- Student 1-step FD ÷ teacher 4-step FD: **{student['fd'] / teacher4['fd']:.2f}** "
        "(goal < 1: one evaluation beats four).",
        f"- Student 1-step FD ÷ teacher 50-step FD: **{student['fd'] / teacher50['fd']:.2f}** "
        "(long-run goal ≤ 1, as DMD2 reports at scale).",
        f"- Teacher 50-step latency ÷ student 1-step latency: **{student['speedup']:.1f}×**.",
        f"- Whole demo: {metrics['wall_s']:.0f} s wall "
        f"({'teacher from cache' if metrics['teacher_cached'] else 'teacher trained in this run'}"
        f", distillation {metrics['distill_s']:.0f} s).",
    ]
    table_and_notes = md.split("\n", 2)[2].strip()
    return "\n".join(
        [
            "## onestep demo: one-step DMD2 student on sklearn digits",
            "",
            f"Command: `{command}` · date {date.today()} · machine: {machine()}.",
            "",
            table_and_notes,
            "",
            *verdict,
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny budgets; does not write BENCHMARKS.md"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "bench")
    args = parser.parse_args()
    out = args.output / "demo"
    command, metrics = run_demo(out, args.smoke)
    section = demo_section(command, metrics, (out / "metrics.md").read_text())
    if args.smoke:
        print(section)
        return 0
    header = (
        "# Benchmarks\n\n"
        "Every figure below was measured by the command printed beside it; rerunning\n"
        "`uv run python tools/bench/run.py` regenerates this file. Ratios are measured side by\n"
        "side in one process; absolute CPU times are only comparable within one table.\n"
    )
    (ROOT / "BENCHMARKS.md").write_text(header + "\n" + section + "\n")
    print(f"wrote {ROOT / 'BENCHMARKS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run the benchmarks and regenerate BENCHMARKS.md.

    uv run python tools/bench/run.py              # full budgets (the numbers in BENCHMARKS.md)
    uv run python tools/bench/run.py --smoke      # CI: small budgets, fails on a regressed figure
    uv run python tools/bench/run.py --assemble   # rewrite BENCHMARKS.md from runs/bench as it is

It runs `onestep demo` and `onestep bench` (core's distillation objectives); each domain package's
`bench` joins here as it lands. Numbers are ratios measured side by side in one run (see the
team's MEASURING notes); the machine, date and command are written beside every table.
"""

import argparse
import json
import os
import platform
import shutil
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


# Each part of `onestep bench` runs in its own process and folder under runs/bench/, so one part
# can be rerun (--parts) and the file reassembled from the others' outputs.
# Two training runs at once (one thread each) on CI-sized machines; timing and digits run alone.
BENCH_PARTS: dict[str, list[str]] = {
    "dm": [
        "--only",
        "gmm",
        "--only",
        "timing",
        "--only",
        "digits",
        "--seeds",
        "0,1,2",
        "--jobs",
        "2",
    ],
    "traj": ["--only", "traj", "--seeds", "0,1,2", "--jobs", "2"],
    "digits_traj": ["--only", "digits-traj"],
}
SMOKE_PARTS: dict[str, list[str]] = {
    "dm": ["--jobs", "2"],
    "traj": ["--only", "traj", "--jobs", "2"],
}


def run_bench(part: str, out: Path, smoke: bool) -> int:
    """`onestep bench`; in smoke mode its exit status 1 means a figure regressed past tolerance."""
    args = ["onestep", "bench", "--output", os.path.relpath(out.resolve(), ROOT), "--threads", "2"]
    args += ["--smoke", *SMOKE_PARTS[part]] if smoke else BENCH_PARTS[part]
    return subprocess.run(args, cwd=ROOT).returncode


# Domain packages' own `bench` verbs: each writes report.md into its folder; --smoke gates figures.
DOMAIN_BENCHES: dict[str, list[str]] = {
    "sr": ["onestep-sr", "bench"],
    "rl": ["onestep-rl", "bench"],
}


def run_domain_bench(part: str, out: Path, smoke: bool) -> int:
    """A domain package's `bench`, in its own process and folder."""
    args = [*DOMAIN_BENCHES[part], "--output", os.path.relpath(out.resolve(), ROOT)]
    args += ["--threads", "2", "--no-progress"] + (["--smoke"] if smoke else [])
    return subprocess.run(args, cwd=ROOT).returncode


def domain_section(part: str, folder: Path, smoke: bool) -> str:
    """A domain bench's report, one heading level down, with its command."""
    report = folder / "report.md"
    if not report.exists():
        return ""
    command = " ".join(["uv run", *DOMAIN_BENCHES[part], "--output", f"runs/bench/{part}"])
    body = report.read_text().replace("\n## ", "\n### ").replace("# ", "## ", 1).strip()
    first, _, rest = body.partition("\n")
    measured = date.fromtimestamp(report.stat().st_mtime)
    strips = "" if smoke else plots_of(folder)
    return (
        f"{first}\n\nCommand: `{command}` · date {measured} · machine: {machine()}.\n{rest}{strips}"
    )


PLOTS = ROOT / "docs" / "bench"  # committed copies of the plots BENCHMARKS.md shows


def plots_of(folder: Path) -> str:
    """Copy a part's plots next to BENCHMARKS.md's images and return their markdown links."""
    links = []
    for png in sorted(folder.glob("*.png")):
        PLOTS.mkdir(parents=True, exist_ok=True)
        target = PLOTS / f"{folder.name}_{png.name}"
        shutil.copyfile(png, target)
        links.append(f"![{png.stem.replace('_', ' ')}]({target.relative_to(ROOT).as_posix()})")
    return "\n\n" + "\n\n".join(links) if links else ""


def bench_section(md: str) -> str:
    """`onestep bench`'s own report, one heading level down."""
    body = md.replace("\n## ", "\n### ").replace("# onestep bench: ", "## onestep bench: ", 1)
    return body.strip()


def demo_section(command: str, metrics: dict, md: str, measured: date) -> str:
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
            f"Command: `{command}` · date {measured} · machine: {machine()}.",
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
    parser.add_argument(
        "--assemble", action="store_true", help="rewrite BENCHMARKS.md from existing outputs"
    )
    parser.add_argument(
        "--parts",
        default="demo," + ",".join([*BENCH_PARTS, *DOMAIN_BENCHES]),
        help="comma-separated parts (demo, dm, traj, digits_traj, sr, rl); others reassembled",
    )
    args = parser.parse_args()
    parts = set() if args.assemble else set(args.parts.split(","))
    out = args.output / "demo"
    command = "uv run onestep demo --output runs/bench/demo"
    if "demo" in parts:
        command, metrics = run_demo(out, args.smoke)
    else:
        metrics = json.loads((out / "metrics.json").read_text())
    for part in BENCH_PARTS:
        if part in parts and (part in SMOKE_PARTS or not args.smoke):
            status = run_bench(part, args.output / part, args.smoke)
            if status != 0:
                print(f"onestep bench ({part}) exited with {status}", file=sys.stderr)
                return status
    for part in DOMAIN_BENCHES:
        if part in parts:
            status = run_domain_bench(part, args.output / part, args.smoke)
            if status != 0:
                print(f"{' '.join(DOMAIN_BENCHES[part])} exited with {status}", file=sys.stderr)
                return status
    # The demo's date is when its metrics were written (--assemble must not restamp it).
    measured = date.fromtimestamp((out / "metrics.json").stat().st_mtime)
    section = demo_section(command, metrics, (out / "metrics.md").read_text(), measured)
    benches = [
        bench_section((args.output / part / "bench.md").read_text())
        + ("" if args.smoke else plots_of(args.output / part))
        for part in BENCH_PARTS
        if (args.output / part / "bench.md").exists()
    ]
    benches += [
        section
        for part in DOMAIN_BENCHES
        if (section := domain_section(part, args.output / part, args.smoke))
    ]
    dm = "\n\n".join(benches)
    if args.smoke:
        print(section + "\n\n" + dm)
        return 0
    header = (
        "# Benchmarks\n\n"
        "Every figure below was measured by the command printed beside it; rerunning\n"
        "`uv run python tools/bench/run.py` regenerates this file. Ratios are measured side by\n"
        "side in one process; absolute CPU times are only comparable within one table.\n"
    )
    notes_file = Path(__file__).with_name("notes.md")
    notes = notes_file.read_text() if notes_file.exists() else ""
    text = header + "\n" + section + "\n\n" + dm + "\n" + ("\n" + notes if notes else "")
    (ROOT / "BENCHMARKS.md").write_text(text)
    print(f"wrote {ROOT / 'BENCHMARKS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``onestep-sr upscale``: super-resolve image files with a saved model folder.

Example::

    onestep-sr upscale photo.jpg shots/ --model runs/demo/student --output out/ --tile 512

Each input image (folders are searched recursively) becomes ``<output>/<stem>.png``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]

PROG = "onestep-sr upscale"
COLOR_FIX_CHOICES = ("none", "wavelet", "adain")


def build_parser() -> argparse.ArgumentParser:
    """The verb's options (their help is the documentation)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Super-resolve images with a model folder saved by "
        "onestep.sr.model_folder.save_resolver (or the SD export).",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders")
    p.add_argument("--model", required=True, type=Path, help="the saved model folder")
    p.add_argument("--output", required=True, type=Path, help="folder for <stem>.png results")
    p.add_argument(
        "--scale",
        type=int,
        default=None,
        help="the SR factor you expect; must equal the model's (default: the model's)",
    )
    p.add_argument(
        "--tile",
        type=int,
        default=None,
        help="tile side in output pixels, a multiple of the scale (default: whole images)",
    )
    p.add_argument(
        "--overlap", type=int, default=32, help="tile overlap in output pixels (default: 32)"
    )
    p.add_argument(
        "--color-fix",
        choices=COLOR_FIX_CHOICES,
        default="none",
        help="match colours to the bicubic upsampling (OSEDiff uses wavelet; default: none)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as err:
        msg = f"--device {device!r} is not a device name ({err}); try cpu or cuda"
        raise ValueError(msg) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device} asked for, but no CUDA device is visible; use cpu")


def run(args: argparse.Namespace) -> int:
    """Check the model and options, then upscale; returns the exit status."""
    from onestep.sr.model_folder import load_resolver, read_model_info
    from onestep.sr.upscale import upscale_files

    info = read_model_info(args.model)  # fails fast, before any weight is read
    if args.scale is not None and args.scale != int(info["scale"]):
        raise ValueError(
            f"--scale {args.scale} does not match the model in {args.model}, which upscales "
            f"x{info['scale']}; pass --scale {info['scale']} or use a x{args.scale} model"
        )
    _check_device(args.device)
    resolver = load_resolver(args.model, args.device)
    color_fix = None if args.color_fix == "none" else args.color_fix
    written = upscale_files(
        resolver,
        args.inputs,
        args.output,
        tile=args.tile,
        overlap=args.overlap,
        color_fix=color_fix,
        progress=not args.no_progress,
    )
    print(f"{PROG}: wrote {len(written)} image(s) (x{resolver.scale}) to {args.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run; a bad input or option prints one line and exits with 2."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help (0) or a usage error (2, already printed)
        return int(done.code or 0)
    try:
        return run(args)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2

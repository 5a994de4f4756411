"""Peak memory of ``upscale`` in a fresh process: ``python -m onestep.sr.bench_memory ...``.

Run once per setting so each process's peak resident set (``ru_maxrss``) belongs to that setting
alone; the model and the input image are made first and their footprint is reported apart
(``baseline_mib``), so ``peak_mib - baseline_mib`` is what the upscale itself added.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch

from onestep.sr.model_folder import load_resolver
from onestep.sr.upscale import upscale

__all__ = ["main", "peak_mib"]


def peak_mib() -> float:
    """This process's peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    """Print ``{"peak_mib", "baseline_mib", "seconds", "shape"}`` as JSON."""
    p = argparse.ArgumentParser(prog="python -m onestep.sr.bench_memory")
    p.add_argument("--model", required=True, help="a folder saved by save_resolver")
    p.add_argument("--size", type=int, required=True, help="LR input side (square)")
    p.add_argument("--tile", type=int, default=None, help="output tile side (none: untiled)")
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    resolver = load_resolver(args.model).eval()
    lr = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    baseline = peak_mib()
    start = time.perf_counter()
    with torch.no_grad():
        sr = upscale(resolver, lr, tile=args.tile, overlap=args.overlap)
    result = {
        "peak_mib": peak_mib(),
        "baseline_mib": baseline,
        "seconds": time.perf_counter() - start,
        "shape": list(sr.shape),
    }
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Run independent benchmark runs side by side, one single-threaded process each.

The 2-D runs are tiny networks whose steps do not scale past one or two threads, so a machine
with many cores is used best by running several seeds and objectives at once. Processes are
started with ``spawn`` (forking after torch has used its thread pool can deadlock), and results
come back in submission order, so tables do not depend on the number of workers.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

import torch

__all__ = ["map_runs"]

R = TypeVar("R")


def _one_thread() -> None:
    torch.set_num_threads(1)


def map_runs(fn: Callable[..., R], calls: Sequence[tuple[Any, ...]], jobs: int = 1) -> Iterator[R]:
    """``fn(*args)`` for every ``args`` in ``calls``, in order, on ``jobs`` worker processes.

    ``jobs=1`` runs them here, one after the other, with this process's threads. With more,
    ``fn`` must be importable at module level and its arguments and result picklable; each
    worker runs with one torch thread. Yields each result as soon as it and all before it are done.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if jobs == 1 or len(calls) <= 1:
        for args in calls:
            yield fn(*args)
        return
    context = multiprocessing.get_context("spawn")
    workers = min(jobs, len(calls))
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        futures = [pool.submit(fn, *args) for args in calls]
        for future in futures:
            yield future.result()

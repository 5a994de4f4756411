"""Runs side by side (``onestep bench --jobs``): same results, same order, as one at a time."""

from __future__ import annotations

import operator

import pytest

from onestep.core.bench.gmm import GMMBudget, run_gmm
from onestep.core.bench.parallel import map_runs


def test_map_runs_in_process_keeps_order():
    calls = [(base, 2) for base in range(7)]
    assert list(map_runs(operator.pow, calls, jobs=1)) == [b**2 for b in range(7)]


def test_map_runs_rejects_zero_jobs():
    with pytest.raises(ValueError, match="jobs"):
        list(map_runs(operator.pow, [(1, 1)], jobs=0))


def test_gmm_runs_in_workers_match_runs_in_process():
    # One pool (spawned workers import torch: seconds each), so one test covers order and results.
    budget = GMMBudget(steps=30, unbalanced_steps=0, eval_every=30, n_eval=500, latency_repeats=1)
    kw = {"seeds": (0, 1), "objectives": ("dmd2",), "log": lambda _: None}
    here = run_gmm(budget, jobs=1, **kw)["rows"][0]
    there = run_gmm(budget, jobs=2, **kw)["rows"][0]
    assert there["seeds"] == here["seeds"] == [0, 1]
    assert there["energy"] == pytest.approx(here["energy"], rel=1e-3, abs=1e-5)

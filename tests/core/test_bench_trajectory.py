"""The trajectory part of ``onestep bench``: scores, ratios, report, plot of a known generator."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from onestep.core.bench import trajectory
from onestep.core.bench.checks import checks_for
from onestep.core.bench.report_traj import trajectory_table, write_nfe_plot
from onestep.core.bench.traj_common import TrajResult, ring_teacher
from onestep.core.sampling import sample


def _teacher_as_method(method, *, steps=None, seed=0, log=None):
    """A 'method' whose nfe-step generator is the exact teacher's nfe-step Euler sampler."""
    _, teacher = ring_teacher()
    return TrajResult(method, seed, lambda z, n: sample(teacher, z, n, solver="euler"), 0.1, 0)


def test_scores_match_the_teacher_rows_for_the_teachers_own_sampler(monkeypatch, tmp_path):
    monkeypatch.setattr(trajectory, "trainer_for", lambda m: _teacher_as_method)
    traj = trajectory.run_trajectory(["euler"], seeds=[0, 1], n_eval=500, nfes=(1, 2, 4), log=print)
    teacher = {t["nfe"]: t for t in traj["teacher"]}
    assert sorted(teacher) == [1, 2, 4, 8, 64]
    for row in traj["rows"]:
        assert_close(row["energy_mean"], teacher[row["nfe"]]["energy_mean"])
        assert row["modes_min"] == teacher[row["nfe"]]["modes_min"]
    four = next(r for r in traj["rows"] if r["nfe"] == 4)
    assert four["energy_over_teacher4"] == pytest.approx(1.0)
    # Goals: the teacher's own 1-step sampler misses the 4-step level; its 4-step meets it.
    checks = {c.name: c for c in checks_for({"traj": traj}, smoke=False)}
    assert not checks["traj euler at 1 NFE: energy / teacher 4-step"].passed
    assert checks["traj euler at 4 NFE: energy / teacher 4-step"].passed
    assert not any(c.gate for c in checks.values())
    smoke = checks_for({"traj": traj}, smoke=True)
    assert all(c.gate for c in smoke)
    text = "\n".join(trajectory_table(traj))
    assert "| euler | 2 |" in text and "| teacher Euler | 64 |" in text
    write_nfe_plot(tmp_path / "nfe.png", traj)
    assert (tmp_path / "nfe.png").stat().st_size > 1000


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown trajectory method"):
        trajectory.trainer_for("nope")


def test_every_registered_trainer_returns_a_working_generator():
    z = torch.randn(64, 2)
    for method in trajectory.TRAJ_METHODS:
        result = trajectory.trainer_for(method)(method, steps=5, seed=0, log=None)
        assert isinstance(result, TrajResult) and result.method == method
        for n in trajectory.TRAJ_NFES:
            with torch.no_grad():
                x = result.generate(z, n)
            assert x.shape == (64, 2) and torch.isfinite(x).all(), (method, n)

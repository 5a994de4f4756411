"""The digits trajectory part of ``onestep bench``: student wrappers start as the teacher; the part
runs end to end at a tiny budget and reports every method at 1 and 2 NFE beside the teacher."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch.testing import assert_close

from onestep.core import noise
from onestep.core.bench import bench_main
from onestep.core.bench.checks import checks_for
from onestep.core.bench.digits_nets import FlowVelocity, TrigFlowFromFlow, TwoTimeDigitsNet
from onestep.core.bench.digits_traj import DIGITS_TRAJ_METHODS, trainer_for
from onestep.core.demo.networks import DigitsDenoiserNet
from onestep.core.denoiser import Denoiser
from onestep.core.methods.ctm import TrajectoryStudent
from onestep.core.methods.meanflow import AverageVelocity, meanflow_generate
from onestep.core.methods.scm import teacher_trigflow_velocity
from onestep.core.methods.scm_jvp import TrigFlowStudent
from onestep.core.sampling import sample


def _teacher() -> Denoiser:
    """A tiny randomly initialised digits denoiser, wrapped as the real teacher is."""
    net = DigitsDenoiserNet(width=32, depth=1, emb_dim=16)
    return Denoiser(net, noise.flow(), prediction="flow", timestep=1000.0).eval()


def test_two_time_net_is_the_teacher_at_init_and_then_depends_on_s():
    teacher = _teacher()
    net = TwoTimeDigitsNet(copy.deepcopy(teacher.net))
    x, t = torch.randn(6, 1, 8, 8), torch.rand(6)
    expected = teacher.raw(x, t)
    for s in (torch.zeros(6), torch.rand(6), t):
        assert_close(net(x, t, s), expected)
    for p in net.s_mlp.parameters():  # once trained, s moves the output
        torch.nn.init.normal_(p)
    assert not torch.allclose(net(x, t, torch.zeros(6)), net(x, t, t))


def test_ctm_and_meanflow_students_start_as_the_teachers_one_step_euler():
    teacher = _teacher()
    z = torch.randn(5, 1, 8, 8)
    euler = sample(teacher, z, 1, solver="euler")
    ctm = TrajectoryStudent(TwoTimeDigitsNet(copy.deepcopy(teacher.net)), teacher.process, "flow")
    ones, zeros = torch.ones(5), torch.zeros(5)
    assert_close(ctm(z, ones, zeros), euler)
    mf = AverageVelocity(TwoTimeDigitsNet(copy.deepcopy(teacher.net)))
    assert_close(meanflow_generate(mf, z), euler)


def test_two_time_net_needs_a_digits_denoiser():
    with pytest.raises(TypeError, match="DigitsDenoiserNet"):
        TwoTimeDigitsNet(torch.nn.Linear(2, 2))


def test_flow_velocity_is_the_raw_flow_output_and_rejects_other_predictions():
    teacher = _teacher()
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    assert_close(FlowVelocity(teacher)(x, t), teacher.raw(x, t))
    eps_model = Denoiser(teacher.net, noise.flow(), prediction="eps")
    with pytest.raises(ValueError, match="flow-prediction"):
        FlowVelocity(eps_model)


def test_trigflow_from_flow_is_the_teachers_trigflow_velocity_and_denoiser():
    """Against the library's x0-based conversion (SANA-Sprint's); the net computes in float32."""
    teacher = _teacher()
    sigma_d = 0.5
    x_t = torch.randn(6, 1, 8, 8)
    tau = torch.linspace(0.05, 1.5, 6)  # the reference needs tan(tau) finite: not pi/2
    F = TrigFlowFromFlow(FlowVelocity(teacher), sigma_d)(x_t / sigma_d, tau)
    reference = teacher_trigflow_velocity(teacher, x_t, tau, sigma_d)
    assert_close(sigma_d * F, reference, rtol=1e-4, atol=1e-4)
    # so the sCM consistency function starts as the teacher's denoiser at the same SNR ...
    student = TrigFlowStudent(TrigFlowFromFlow(FlowVelocity(teacher), sigma_d), sigma_d)
    t_rf = teacher.process.t_from_sigma_ratio(sigma_d * torch.tan(tau))
    x_rf = x_t * (1 - t_rf).view(-1, 1, 1, 1) / torch.cos(tau).view(-1, 1, 1, 1)
    expected = teacher(x_rf, t_rf)
    assert_close(student.consistency(x_t, tau), expected, rtol=1e-4, atol=1e-4)
    # ... and its one-step sample from sigma_d z at tau = pi/2 is the teacher's from z at t = 1
    z, ones = torch.randn(4, 1, 8, 8), torch.ones(4)
    assert_close(student(sigma_d * z, ones), teacher(z, ones), rtol=1e-4, atol=1e-4)


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown digits trajectory method"):
        trainer_for("tscd")


def test_goals_never_gate():
    rows = [
        {"method": "kd", "nfe": 1, "fd_over_teacher4": 0.5},
        {"method": "kd", "nfe": 2, "fd_over_teacher4": 1.5},
    ]
    for smoke in (False, True):
        checks = checks_for({"digits-traj": {"rows": rows}}, smoke=smoke)
        assert [c.name for c in checks] == [
            "digits traj kd at 1 NFE: FD / teacher 4-step",
            "digits traj kd at 2 NFE: FD / teacher 4-step",
        ]
        assert [c.passed for c in checks] == [True, False]
        assert not any(c.gate for c in checks)


def _finite(v) -> bool:
    return isinstance(v, float) and math.isfinite(v)


def test_smoke_part_end_to_end_through_the_cli(tmp_path, monkeypatch):
    """Tiny teacher, classifier and students (cached under tmp_path); every method, 1 and 2 NFE."""
    monkeypatch.setenv("ONESTEP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bench"
    assert bench_main(["--smoke", "--only", "digits-traj", "--output", str(out)]) == 0
    payload = json.loads((out / "bench.json").read_text())
    assert payload["parts"] == ["digits-traj"]
    part = payload["digits-traj"]
    assert [(r["method"], r["nfe"]) for r in part["rows"]] == [
        (m, n) for m in DIGITS_TRAJ_METHODS for n in (1, 2)
    ]
    t4 = next(t["fd"] for t in part["teacher"] if t["nfe"] == 4)
    assert [t["nfe"] for t in part["teacher"]] == [1, 2, 4, 8, 50]
    for r in part["rows"]:
        assert _finite(r["fd"]) and r["fd"] > 0 and r["train_s"] >= 0
        assert r["fd_over_teacher4"] == pytest.approx(r["fd"] / t4)
    assert _finite(part["held_out"]) and part["held_out"] < t4
    assert set(part["notes"]) == set(DIGITS_TRAJ_METHODS)
    checks = payload["checks"]
    assert len(checks) == 2 * len(DIGITS_TRAJ_METHODS) and not any(c["gate"] for c in checks)
    text = (out / "bench.md").read_text()
    assert "| kd | 1 |" in text and "| teacher 50-step (dpm++2m) | 50 |" in text
    assert "real held-out digits" in text and "digits traj ct at 2 NFE" in text

    # --methods picks the part's methods and skips those it has no digits trainer for
    code = bench_main(
        ["--smoke", "--only", "digits-traj", "--methods", "kd,tscd", "--output", str(out)]
    )
    assert code == 0
    rows = json.loads((out / "bench.json").read_text())["digits-traj"]["rows"]
    assert [(r["method"], r["nfe"]) for r in rows] == [("kd", 1), ("kd", 2)]

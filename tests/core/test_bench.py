"""``onestep bench``: smoke run writes its outputs, tolerances gate, timing ratio arithmetic."""

from __future__ import annotations

import json
import math

import pytest
import torch

from onestep.core.bench import bench_main
from onestep.core.bench.checks import checks_for
from onestep.core.bench.gmm import light_mode_recall
from onestep.core.bench.gmm_train import GMMConfig, GMMTrainer, mixture_preset
from onestep.core.bench.report import Check
from onestep.core.bench.timing import measure_overhead
from onestep.core.testing import (
    assert_params_changed,
    assert_params_unchanged,
    snapshot_params,
)

# Tiny budget: two objectives (one plain, one with a discriminator), one seed, 20 updates.
TINY = ["--smoke", "--only", "gmm", "--objectives", "dmd2,fdiv-js", "--steps", "20"]
LOOSE = ["--tolerance", "energy_over_teacher2_max=1e9", "--tolerance", "dmd2_modes_min=0"]


def _finite_numbers(obj) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite_numbers(v) for v in obj)
    return True


def test_smoke_gmm_writes_markdown_json_and_plot(tmp_path):
    out, extra = tmp_path / "bench", tmp_path / "extra.json"
    code = bench_main([*TINY, *LOOSE, "--output", str(out), "--json", str(extra)])
    assert code == 0
    payload = json.loads(extra.read_text())
    assert payload == json.loads((out / "bench.json").read_text())
    rows = payload["gmm"]["rows"]
    assert [r["objective"] for r in rows] == ["dmd2", "fdiv-js"]
    assert [t["nfe"] for t in payload["gmm"]["teacher"]] == [1, 2, 4, 8, 64]
    for r in rows:
        assert r["energy_mean"] is not None and r["energy_mean"] > 0
        assert r["latency_vs_teacher4"] is not None and r["latency_vs_teacher4"] > 0
        assert r["curve_steps"][-1] == 20
    assert _finite_numbers(payload["gmm"]["rows"]) and _finite_numbers(payload["gmm"]["teacher"])
    assert all(c["passed"] for c in payload["checks"]) and len(payload["checks"]) == 3
    text = (out / "bench.md").read_text()
    assert "| dmd2 | 1 |" in text and "| teacher Euler | 64 |" in text and "PASS:" in text
    assert (out / "quality_vs_step.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_figure_past_its_tolerance_fails_the_command(tmp_path, capsys):
    strict = ["--tolerance", "energy_over_teacher2_max=1e-9", "--tolerance", "dmd2_modes_min=0"]
    code = bench_main([*TINY[:4], "dmd2", "--steps", "10", "--output", str(tmp_path), *strict])
    assert code == 1
    err = capsys.readouterr().err
    assert "FAIL: gmm dmd2 energy / teacher 2-step" in err and "tolerance <= 1e-09" in err


def test_bad_options_return_2(tmp_path):
    assert bench_main(["--tolerance", "no_such_tolerance=1"]) == 2
    assert bench_main(["--seeds", "a,b"]) == 2
    (tmp_path / "file").write_text("x")
    assert bench_main(["--output", str(tmp_path / "file")]) == 2
    assert bench_main(["--only", "traj", "--methods", "cd,nope", "--output", str(tmp_path)]) == 2
    assert not (tmp_path / "bench.md").exists()  # refused before any work


def test_full_goals_never_gate_and_smoke_gates_do():
    result = {
        "gmm": {
            "rows": [
                {
                    "objective": "dmd2",
                    "energy_mean": 0.5,
                    "energy_over_teacher4": 100.0,
                    "energy_over_teacher64": 1e3,
                    "modes_min": 3,
                }
            ],
            "teacher": [{"nfe": 2, "energy_mean": 0.17}],
            "unbalanced": [
                {"objective": "fdiv-rkl", "light_recall_mean": 0.5},
                {"objective": "fdiv-js", "light_recall_mean": 0.9},
                {"objective": "fdiv-fkl", "light_recall_mean": 0.7},
            ],
        },
        "timing": {"ratio": 2.0},
    }
    full = checks_for(result, smoke=False)
    assert not any(c.gate for c in full)
    gain = next(c for c in full if "light-mode" in c.name)
    assert gain.value == pytest.approx(0.4) and gain.passed
    smoke = checks_for(result, smoke=True)
    gates = [c for c in smoke if c.gate]  # energy, modes, step overhead
    assert [c.passed for c in gates] == [False, False, False]
    assert [c.gate for c in smoke if "light-mode" in c.name] == [False]
    assert not Check("nan", float("nan"), "<=", 1.0).passed


class FakeClock:
    """A clock that only the fake passes advance: timing without sleeping or noise."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: dict[str, int] = {}

    def work(self, name: str, seconds: float):
        def run() -> None:
            self.calls[name] = self.calls.get(name, 0) + 1
            self.now += seconds

        return run


def test_measure_overhead_ratio_from_fake_passes():
    clock = FakeClock()
    a, b = clock.work("a", 0.001), clock.work("b", 0.002)
    glue = clock.work("glue", 0.0005)

    def step() -> None:  # a once, b twice, plus 0.5 ms of glue: 5.5 ms against 5 ms of passes
        a()
        b()
        b()
        glue()

    timing = measure_overhead(
        step, {"a": (a, 1), "b": (b, 2)}, repeats=5, warmup=2, inner=3, clock=lambda: clock.now
    )
    assert timing.step_ms == pytest.approx(5.5)
    assert timing.passes_ms == pytest.approx({"a": 1.0, "b": 2.0})
    assert timing.sum_ms == pytest.approx(5.0)
    assert timing.ratio == pytest.approx(1.1)
    # warm-up + repeats x inner calls of each callable; the step calls a once and b twice
    assert clock.calls["glue"] == 2 + 5 * 3
    assert clock.calls["a"] == (2 + 5 * 3) * 2
    assert clock.calls["b"] == (2 + 5 * 3) * 3


def test_light_mode_recall():
    weights = torch.tensor([0.4, 0.3, 0.2, 0.1])
    assert light_mode_recall([0.4, 0.3, 0.2, 0.1], weights, n_light=2) == pytest.approx(1.0)
    # lightest two: 0.1 of 0.2 (0.5) and none of 0.1 (0.0); heavy modes do not count
    assert light_mode_recall([0.6, 0.3, 0.1, 0.0], weights, n_light=2) == pytest.approx(0.25)


@pytest.mark.parametrize("objective", ["dmd2", "vsd", "sid", "sim", "fdiv-js"])
def test_student_step_moves_only_the_student(objective):
    trainer = GMMTrainer(GMMConfig(objective=objective, batch_size=64), mixture_preset("ring"))
    frozen = {
        "fake_score": snapshot_params(trainer.fake_score),
        "discriminator": snapshot_params(trainer.discriminator),
    }
    before = snapshot_params(trainer.student)
    loss = trainer.student_step()
    assert torch.isfinite(loss)
    assert_params_unchanged(trainer.fake_score, frozen["fake_score"])
    assert_params_unchanged(trainer.discriminator, frozen["discriminator"])
    assert_params_changed(trainer.student, before)
    assert all(p.requires_grad for p in trainer.fake_score.parameters())


def test_cosine_to_floor_schedule():
    from onestep.core.bench.schedule import cosine_to_floor

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = cosine_to_floor(opt, steps=4, floor=0.1)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    half = 0.1 + 0.9 * 0.5  # the cosine's midpoint at step 2 of 4
    assert lrs == pytest.approx(
        [
            2.0,
            2.0 * (0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2),
            2.0 * half,
            2.0 * (0.1 + 0.9 * (1 - math.cos(math.pi / 4)) / 2),
            0.2,
            0.2,
        ]
    )
    with pytest.raises(ValueError, match="floor"):
        cosine_to_floor(opt, 4, 1.5)

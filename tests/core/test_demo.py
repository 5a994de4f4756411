import json
import math
import time

import pytest
import torch
from safetensors.torch import load_file

from onestep.core.demo import demo_main, dmd_gradient_loss
from onestep.core.demo.export import load_student
from onestep.core.demo.networks import DigitsClassifier, DigitsDenoiserNet


def test_dmd_gradient_matches_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    x0_real = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64)
    x0_fake = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64)
    loss = dmd_gradient_loss(x, x0_real, x0_fake)
    assert loss.shape == (5,)
    loss.sum().backward()
    assert x.grad is not None
    # independent computation, per sample, with an explicit loop over the batch
    for i in range(5):
        norm = (x[i].detach() - x0_real[i]).abs().sum() / x[i].numel()
        expected = (x0_fake[i] - x0_real[i]) / (norm + 1e-6)
        torch.testing.assert_close(x.grad[i], expected)


def test_dmd_gradient_is_rank_agnostic_and_zero_when_scores_agree():
    x = torch.randn(3, 10, requires_grad=True)
    real = torch.randn(3, 10)
    dmd_gradient_loss(x, real, real).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.zeros_like(x))


def test_networks_shapes():
    net = DigitsDenoiserNet(width=32, depth=1)
    x = torch.randn(4, 1, 8, 8)
    assert net(x, torch.rand(4) * 1000).shape == x.shape
    clf = DigitsClassifier(feature_dim=16)
    assert clf.features(x).shape == (4, 16) and clf(x).shape == (4, 10)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--teacher-steps", "-3"], "must be >= 1"),
        (["--student-steps", "-1"], "must be >= 0"),
        (["--device", "tpu"], "device"),
        (["--threads", "0"], "must be >= 1"),
        (["--frobnicate"], "unrecognized"),
    ],
)
def test_bad_options_exit_2(argv, message, capsys):
    assert demo_main(argv) == 2
    assert message in capsys.readouterr().err


def test_output_that_is_a_file_exits_2(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert demo_main(["--output", str(f)]) == 2
    assert "existing file" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_cuda_exits_2(capsys):
    assert demo_main(["--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_help_lists_options(capsys):
    assert demo_main(["--help"]) == 0
    out = capsys.readouterr().out
    for opt in (
        "--output",
        "--teacher-steps",
        "--student-steps",
        "--seed",
        "--device",
        "--retrain",
        "--quick",
        "--threads",
    ):
        assert opt in out


def _run(out, capsys):
    start = time.perf_counter()
    code = demo_main(["--quick", "--output", str(out), "--threads", "1"])
    elapsed = time.perf_counter() - start
    assert code == 0
    return capsys.readouterr().out, elapsed


def test_quick_demo_end_to_end_and_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ONESTEP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    log1, _ = _run(out, capsys)
    assert "trained teacher" in log1 and "trained classifier" in log1
    for name in (
        "samples.png",
        "metrics.md",
        "metrics.json",
        "student.safetensors",
        "student.json",
    ):
        assert (out / name).is_file(), name

    metrics = json.loads((out / "metrics.json").read_text())
    methods = [r["method"] for r in metrics["rows"]]
    assert methods == [
        "teacher 50-step (dpm++2m)",
        "teacher 4-step (dpm++2m)",
        "teacher 1-step (euler)",
        "student 1-step (DMD2)",
        "real held-out digits",
    ]
    for row in metrics["rows"]:
        assert math.isfinite(row["fd"]) and row["fd"] >= 0
        if row["method"].startswith(("teacher", "student")):
            assert math.isfinite(row["latency_ms"]) and row["latency_ms"] > 0
    assert [r["nfe"] for r in metrics["rows"]] == [50, 4, 1, 1, 0]
    table = (out / "metrics.md").read_text()
    assert all(m in table for m in methods) and "| method | NFE | FD |" in table

    student = load_student(out)
    state = load_file(str(out / "student.safetensors"))
    for k, v in student.net.state_dict().items():
        torch.testing.assert_close(v, state[k])
    x = student(torch.randn(2, 1, 8, 8), torch.ones(2))
    assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()

    # Second run: teacher and classifier come from the cache, outputs overwritten.
    log2, _ = _run(out, capsys)
    assert "loaded cached teacher" in log2 and "loaded cached classifier" in log2
    assert json.loads((out / "metrics.json").read_text())["teacher_cached"] is True


def test_corrupt_cache_is_retrained_with_warning(tmp_path, monkeypatch, capsys):
    from onestep.core.demo import _cache
    from onestep.core.demo.teacher import TeacherConfig, load_or_train_teacher

    monkeypatch.setenv("ONESTEP_CACHE", str(tmp_path))
    images = torch.rand(16, 1, 8, 8) * 2 - 1
    cfg = TeacherConfig(width=16, depth=1, steps=2, batch_size=4)
    teacher, cached = load_or_train_teacher(cfg, images, progress=False)
    assert not cached
    path = next((tmp_path / "demo").glob("teacher-*.safetensors"))
    assert path.parent.parent == _cache.cache_dir()
    path.write_bytes(b"not a safetensors file")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again, cached = load_or_train_teacher(cfg, images, progress=False)
    assert not cached
    for a, b in zip(teacher.parameters(), again.parameters(), strict=True):
        torch.testing.assert_close(a, b)  # same seed, same weights
    _, cached = load_or_train_teacher(cfg, images, progress=False)
    assert cached
    _, cached = load_or_train_teacher(cfg, images, progress=False, retrain=True)
    assert not cached

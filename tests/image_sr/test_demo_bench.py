"""`onestep-sr demo --quick` writes what it promises; the smoke gates fail when they should."""

import json

from onestep.sr.bench import gates, report
from onestep.sr.demo import main as demo_main
from onestep.sr.model_folder import load_resolver


def test_quick_demo_writes_tables_strips_and_a_reloadable_student(tmp_path, monkeypatch):
    monkeypatch.setenv("ONESTEP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert demo_main(["--quick", "--output", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert {"bicubic", "student 1-step"} <= set(summary["means"])
    assert (out / "metrics.md").exists() and list(out.glob("strip*.png"))
    assert list((out / "upscaled").glob("*.png"))
    resolver = load_resolver(out / "student")
    assert resolver.scale == 4


def _results(student_psnr, ratio, tiled_added):
    means = {
        "bicubic": {"psnr": 29.5, "ssim": 0.8, "latency_s": 0.001},
        "teacher 50-step": {"psnr": 27.0, "ssim": 0.7, "latency_s": 5.0},
        "osediff 1-step": {"psnr": student_psnr, "ssim": 0.8, "latency_s": 5.0 / ratio},
    }
    untiled = {"peak_mib": 2000.0, "baseline_mib": 1600.0}
    tiled = {"peak_mib": 1600.0 + tiled_added, "baseline_mib": 1600.0}
    return {
        "scale": 4,
        "teacher": {"steps": 1},
        "student_steps": 1,
        "means": means,
        "latency_ratio": ratio,
        "memory": {"size": 64, "tile": 32, "untiled": untiled, "tiled": tiled},
    }


def test_smoke_gates():
    assert gates(_results(29.8, 45.0, 0.0)) == []
    failures = gates(_results(29.4, 10.0, 500.0))
    assert len(failures) == 3
    assert "bicubic" in failures[0] and "latency" in failures[1] and "memory" in failures[2]
    assert "**45.0x**" in report(_results(29.8, 45.0, 0.0))

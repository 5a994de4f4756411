"""The onestep-sr command line: verbs, help, ``upscale`` end to end, errors that name the fix."""

import re
from importlib.util import find_spec

import pytest
import torch
from torch.testing import assert_close

from onestep.core.testing import check_domain_cli
from onestep.sr.cli import PLANNED, build_main, main
from onestep.sr.data import load_image
from onestep.sr.model_folder import load_resolver, save_resolver
from onestep.sr.models.resolvers import StudentResolver
from onestep.sr.models.student import OneStepStudent
from onestep.sr.models.teacher import build_denoiser
from onestep.sr.models.unet import tiny_unet
from onestep.sr.space import PixelSpace
from onestep.sr.upscale import save_png, upscale

VERBS = ("fit", "validate", "test", "predict", "upscale", "demo", "bench")


@pytest.fixture
def model_dir(tmp_path):
    net = tiny_unet(widths=(8, 16), groups=4)
    with torch.no_grad():
        torch.nn.init.normal_(net.unet.conv_out.weight, std=0.05)
    resolver = StudentResolver(OneStepStudent(build_denoiser(net)), PixelSpace(), 4)
    return save_resolver(resolver, tmp_path / "model")


@pytest.fixture
def image(tmp_path):
    return save_png(
        torch.rand(3, 20, 28, generator=torch.Generator().manual_seed(3)), tmp_path / "lr.png"
    )


def test_domain_cli_conventions_while_demo_and_bench_are_missing(capsys):
    check_domain_cli(build_main(lambda module: False), "onestep-sr", PLANNED, capsys)
    assert build_main(lambda module: False)(["bench"]) == 2
    assert PLANNED in capsys.readouterr().err


def test_help_lists_every_verb_and_each_verb_has_help(capsys):
    assert main([]) == 0
    available = capsys.readouterr().out.split("available now:")[1].splitlines()[0]
    for verb in VERBS:
        built = verb not in ("demo", "bench") or find_spec(f"onestep.sr.{verb}") is not None
        assert (verb in available) == built, verb
        if built:
            assert main([verb, "--help"]) == 0, verb
            assert "usage:" in capsys.readouterr().out, verb
    assert main(["frobnicate"]) == 2
    assert "unknown verb" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["demo", "bench"])
def test_demo_and_bench_call_their_module(verb, monkeypatch):
    if find_spec(f"onestep.sr.{verb}") is None:
        pytest.skip(f"onestep.sr.{verb} is not written yet")
    seen = []
    monkeypatch.setattr(f"onestep.sr.{verb}.main", lambda argv: seen.append(argv) or 1)
    assert main([verb, "--smoke", "--output", "x"]) == 1
    assert seen == [["--smoke", "--output", "x"]]


def test_upscale_writes_what_upscale_computes(model_dir, image, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["upscale", str(image), "--model", str(model_dir), "--output", str(out)]
    args += ["--scale", "4", "--tile", "32", "--overlap", "8", "--no-progress"]
    assert main(args) == 0
    assert "wrote 1 image(s) (x4)" in capsys.readouterr().out
    written = load_image(out / "lr.png")
    assert written.shape == (3, 80, 112)
    expected = upscale(load_resolver(model_dir), load_image(image)[None], tile=32, overlap=8)
    assert_close(written, (expected[0] * 255).round() / 255, atol=1e-6, rtol=0)

    assert main([*args[:5], str(tmp_path / "fixed"), "--color-fix", "adain", "--no-progress"]) == 0
    assert not torch.equal(load_image(tmp_path / "fixed" / "lr.png"), written)


def test_upscale_errors_name_the_fix(model_dir, image, tmp_path, capsys):
    base = ["upscale", str(image), "--output", str(tmp_path / "out"), "--no-progress"]
    cases = {
        "--scale 2 does not match.*upscales x4; pass --scale 4": [
            "--model", str(model_dir), "--scale", "2"
        ],
        "model folder .* does not exist": ["--model", str(tmp_path / "none")],
        "no onestep_sr.json": ["--model", str(tmp_path)],
        "tile=30 output pixels is not a multiple of the scale 4": [
            "--model", str(model_dir), "--tile", "30"
        ],
        "invalid choice: 'sharp'": ["--model", str(model_dir), "--color-fix", "sharp"],
    }  # fmt: skip
    if not torch.cuda.is_available():
        cases["no CUDA device is visible; use cpu"] = [
            "--model",
            str(model_dir),
            "--device",
            "cuda",
        ]
    for message, extra in cases.items():
        assert main([*base, *extra]) == 2, message
        assert re.search(message, capsys.readouterr().err), message
    missing = ["upscale", str(tmp_path / "nope.png"), "--model", str(model_dir), "--output", "o"]
    assert main(missing) == 2
    assert "neither an image file nor a folder" in capsys.readouterr().err


def test_lightning_verbs_return_the_parsers_status(tmp_path, capsys):
    assert main(["fit", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err

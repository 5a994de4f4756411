"""The onestep-rl command line: version, help, every verb wired, ``evaluate`` on a checkpoint."""

import json
from importlib.metadata import version

import pytest

from onestep.rl.cli import main

VERBS = (
    "fit",
    "validate",
    "test",
    "predict",
    "evaluate",
    "collect",
    "demo",
    "bench",
    "bench-merge",
)


def test_version_help_and_unknown_verb(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == version("onestep-rl")
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "not yet built" not in out
    for verb in VERBS:
        assert verb in out
    assert main(["frobnicate"]) == 2
    assert "unknown verb" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["evaluate", "collect", "demo", "bench", "bench-merge"])
def test_module_verbs_answer_help(verb, capsys):
    assert main([verb, "--help"]) == 0
    assert f"onestep-rl {verb}" in capsys.readouterr().out


@pytest.fixture(scope="module")
def pendulum_checkpoint(tmp_path_factory):
    """An OFQL agent fitted 5 iterations on a small random InvertedPendulum dataset."""
    from onestep.rl.collect import collect
    from onestep.rl.data import OfflineDataModule
    from onestep.rl.training import build_agent, fit_agent

    root = tmp_path_factory.mktemp("rl-cli")
    collect("InvertedPendulum-v5", "random", 300, root / "data", eval_episodes=2, progress=False)
    dm = OfflineDataModule(str(root / "data"), batch_size=32)
    dm.setup("fit")
    agent = build_agent("ofql", dm.obs_dim, dm.act_dim, hidden=32, depth=2)
    fit_agent(agent, dm, 5, root / "ofql.ckpt", progress=False)
    return root


def test_evaluate_writes_json_with_dataset_reference(pendulum_checkpoint, capsys):
    root = pendulum_checkpoint
    out = root / "eval.json"
    args = ["evaluate", "--checkpoint", str(root / "ofql.ckpt"), "--env", "InvertedPendulum-v5"]
    args += ["--episodes", "2", "--dataset", str(root / "data"), "--output", str(out)]
    assert main(args) == 0
    assert "ofql: InvertedPendulum-v5: return" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["agent"] == "ofql" and len(record["returns"]) == 2
    # A random-behaviour dataset has a random reference but no trained one: no normalised score.
    assert record["normalized_mean"] is None and record["normalized_error"]


def test_evaluate_refuses_a_mismatched_environment(pendulum_checkpoint, capsys):
    ckpt = str(pendulum_checkpoint / "ofql.ckpt")
    assert main(["evaluate", "--checkpoint", ckpt, "--env", "Hopper-v5", "--episodes", "1"]) == 1
    err = capsys.readouterr().err
    assert "ofql.ckpt was trained for observations (4,)" in err and "Hopper-v5 has (11,)" in err


def test_evaluate_refuses_zero_candidates_before_loading(tmp_path, capsys):
    missing = str(tmp_path / "absent.ckpt")  # never opened: the flag is checked first
    args = ["evaluate", "--checkpoint", missing, "--env", "Hopper-v5", "--candidates", "0"]
    assert main(args) == 2
    assert "--candidates must be >= 1, got 0" in capsys.readouterr().err

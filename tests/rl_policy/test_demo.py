"""``onestep-rl demo --quick`` runs end to end and writes what the issue promises."""

import json

import torch

from onestep.rl.agents import load_agent
from onestep.rl.cli import main


def test_quick_demo_writes_results_and_checkpoints(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ONESTEP_RL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--output", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    for name in ("ofql", "dql"):
        entry = results[name]
        assert isinstance(entry["return"], float) and entry["latency"] > 0
        assert list(entry["returns_by_iteration"]) == ["100"]  # --quick: the final iteration
        agent = load_agent(entry["checkpoint"])
        assert agent.agent_name == name
        assert agent.act(torch.zeros(1, agent.hparams["obs_dim"])).shape == (1, 1)
    # DQL samples 50 candidates through 5 steps: far slower than one OFQL evaluation.
    assert results["latency_ratio"] > 2
    table = (out / "results.md").read_text()
    assert "Action latency DQL ÷ OFQL" in table and "| 100: " in table
    assert "wrote" in capsys.readouterr().out

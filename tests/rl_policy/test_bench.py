"""``onestep-rl bench``'s report and smoke gates on hand-made results (the run itself is CI's
benchmark step: ``tools/bench/run.py --smoke``)."""

from onestep.rl.bench import gates, report


def _results(dql_ms: float, covered: bool = True, ret: float = 10.0) -> dict:
    row = {
        a: {
            "normalized_mean": 50.0,
            "normalized_std": 1.0,
            "mean_return": ret,
            "std_return": 1.0,
            "returns": [ret, ret],
            "reference": "d4rl",
            "returns_by_iteration": {5: ret, 10: ret},
        }
        for a in ("ofql", "fql", "dql")
    }
    return {
        "agents": ["ofql", "fql", "dql"],
        "iterations": 10,
        "episodes": 2,
        "eval_iterations": [5, 10],
        "seed": 0,
        "returns": {"hopper-replay": {"behaviour_return": 100.0, **row}},
        "timing": {
            "act_ms": {"ofql": 0.1, "fql": 0.1, "dql": dql_ms, "dql_chain": 0.5},
            "step_ms": {"ofql": 5.0, "fql": 6.0, "dql": 12.0},
            "obs_dim": 11,
            "act_dim": 3,
            "threads": 1,
            "candidates": {"ofql": 1, "fql": 1, "dql": 50},
        },
        "bandit": {
            "modes": ["a", "b", "c", "d"],
            "coverage": {"ofql": {"fractions": [0.25] * 4, "all_covered": covered}},
        },
    }


def test_report_has_every_table_and_ratio():
    md = report(_results(dql_ms=1.0))
    assert "| hopper-replay | 100.0 | d4rl | 50.0 ± 1.0 |" in md
    assert "Action latency DQL ÷ OFQL: **10.0×**" in md
    assert "Training-iteration time DQL ÷ OFQL: **2.40×**" in md
    assert "goal OFQL ≥ DQL: met" in md
    assert "| ofql | 0.25 | 0.25 | 0.25 | 0.25 | True |" in md
    assert "at iterations 5, 10" in md and "| hopper-replay | 5: 10.0, 10: 10.0 |" in md


def test_gates_fail_on_slow_ratio_missed_mode_or_nan():
    assert gates(_results(dql_ms=1.0)) == []
    assert any("latency" in f for f in gates(_results(dql_ms=0.3)))
    assert any("bandit mode" in f for f in gates(_results(dql_ms=1.0, covered=False)))
    assert any("non-finite" in f for f in gates(_results(dql_ms=1.0, ret=float("nan"))))


def test_unknown_dataset_names_are_refused_with_the_choices(tmp_path, capsys):
    from onestep.rl.cli import main

    assert main(["bench", "--datasets", "hopper-mediumm", "--output", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "hopper-mediumm" in err and "hopper-replay" in err

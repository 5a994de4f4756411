"""``onestep-rl bench``'s report, smoke gates and ``--seeds`` summary on hand-made results
(the run itself is CI's benchmark step: ``tools/bench/run.py --smoke``)."""

import statistics

import pytest

from onestep.rl.bench import gates, report
from onestep.rl.bench_seeds import parse_seeds, run_label, seed_summary, seed_summary_lines


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
    assert "| ofql | 0.250 | 0.250 | 0.250 | 0.250 | True |" in md
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


def test_parse_seeds_lists_ranges_and_refusals():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("5, 1-2, 5") == [5, 1, 2]
    for bad in ("", "a", "1-b", ",", "-1"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


def test_run_label_names_the_seed_only_when_there_are_several():
    assert run_label("hopper-replay", 3, [3]) == "hopper-replay"
    assert run_label("hopper-replay", 3, [1, 3]) == "hopper-replay s3"


def _row(seed: int, ofql: float, dql: float) -> dict:
    def entry(ret: float) -> dict:
        return {"mean_return": ret, "normalized_mean": ret / 10, "normalized_std": 0.0}

    return {
        "dataset": "ip",
        "seed": seed,
        "ofql": entry(ofql),
        "fql": entry(50.0),
        "dql": entry(dql),
    }


def test_seed_summary_means_spreads_and_paired_difference():
    returns = {
        f"ip s{s}": _row(s, o, d)
        for s, o, d in [(0, 100.0, 80.0), (1, 40.0, 70.0), (2, 90.0, 60.0)]
    }
    summary = seed_summary(returns, ["ofql", "fql", "dql"])["ip"]
    assert summary["seeds"] == [0, 1, 2]
    assert summary["ofql"]["mean_return"] == pytest.approx(230 / 3)
    assert summary["ofql"]["std_return"] == pytest.approx(statistics.stdev([100, 40, 90]))
    assert summary["dql"]["normalized_mean"] == pytest.approx(7.0)
    assert summary["fql"]["std_return"] == 0.0
    diff = summary["ofql_minus_dql"]
    assert diff["mean"] == pytest.approx(20 / 3)
    assert diff["stderr"] == pytest.approx(statistics.stdev([20, -30, 30]) / 3**0.5)
    assert (diff["ofql_at_least_dql"], diff["seeds"]) == (2, 3)
    lines = "\n".join(
        seed_summary_lines(seed_summary(returns, ["ofql", "fql", "dql"]), ["ofql", "fql", "dql"])
    )
    assert "| ip | 0, 1, 2 | 76.7 ± 32.1 |" in lines
    assert "goal OFQL ≥ DQL on the mean: **met**" in lines
    assert "OFQL ≥ DQL in 2 of 3 seeds" in lines


def test_one_seed_has_no_spread_and_a_missing_reference_stays_none():
    row = _row(0, 10.0, 20.0)
    row["ofql"]["normalized_mean"] = None
    summary = seed_summary({"ip": row}, ["ofql", "dql"])["ip"]
    assert summary["ofql"]["normalized_mean"] is None and summary["ofql"]["std_return"] == 0.0
    assert summary["ofql_minus_dql"]["stderr"] == 0.0
    assert "**not met**" in "\n".join(seed_summary_lines({"ip": summary}, ["ofql", "dql"]))


def test_report_adds_the_across_seed_section_only_for_several_seeds():
    one = _results(dql_ms=1.0)
    assert "Across seeds" not in report(one) and "seed 0." in report(one)
    several = _results(dql_ms=1.0)
    row = several["returns"].pop("hopper-replay")
    for s in (0, 1):
        several["returns"][f"hopper-replay s{s}"] = {**row, "dataset": "hopper-replay", "seed": s}
    several["seeds"] = [0, 1]
    several["across_seeds"] = seed_summary(several["returns"], several["agents"])
    md = report(several)
    assert "seeds 0, 1 (each with its own collected data)" in md
    assert "| hopper-replay s1 | 100.0 | d4rl |" in md
    assert "| hopper-replay | 0, 1 | 10.0 ± 0.0 |" in md
    assert "hopper-replay, 2 seeds: OFQL 10.0 vs DQL 10.0" in md


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--seeds", "0,x"], 1, "--seeds"),
        (["--seed", "3", "--seeds", "0-1"], 2, "not allowed with argument --seed"),
        (["--alpha", "ofql=-2"], 1, "--alpha: ofql's alpha must be a finite number >= 0"),
    ],
    ids=["bad-seeds", "seed-and-seeds", "negative-alpha"],
)
def test_bad_arguments_are_refused_before_any_work(argv, code, message, tmp_path, capsys):
    from onestep.rl.cli import main

    assert main(["bench", *argv, "--output", str(tmp_path)]) == code
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(
    ("candidates", "phrase"),
    [
        (None, "Each agent acts with its own selection rule (DQL: 50 candidates"),
        (1, "Every agent acts with one sample (`--candidates 1`"),
        (50, "Every agent acts with the same selection rule (`--candidates 50`)"),
    ],
)
def test_report_names_the_action_selection(candidates, phrase):
    assert phrase in report({**_results(dql_ms=1.0), "candidates": candidates})


def test_candidates_reach_every_agent_and_bad_counts_are_refused(tmp_path, capsys):
    import argparse

    from onestep.rl.bench import _act_settings
    from onestep.rl.cli import main
    from onestep.rl.training import build_agent

    assert _act_settings(argparse.Namespace(candidates=None)) == {}
    settings = _act_settings(argparse.Namespace(candidates=7))
    for name in ("ofql", "fql", "dql"):
        assert build_agent(name, 3, 2, **settings).hparams["num_candidates"] == 7
    assert main(["bench", "--candidates", "0", "--output", str(tmp_path)]) == 2
    assert "--candidates must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_bare_chain_ratio_only_against_one_sample_ofql():
    one = report(_results(dql_ms=1.0))
    assert "bare 5-step chain ÷ OFQL: 5.0×" in one
    matched = _results(dql_ms=1.0)
    matched["timing"]["candidates"] = {"ofql": 50, "fql": 50, "dql": 50}
    md = report(matched)
    assert "Action latency DQL ÷ OFQL: **10.0×** (goal ≥ 5)." in md
    assert "bare 5-step chain" not in md


def test_parse_alpha_names_agents_and_refuses_bad_pairs():
    from onestep.rl.bench_alpha import parse_alpha

    agents = ("ofql", "fql", "dql")
    assert parse_alpha("ofql=10,dql=3", agents) == {"ofql": 10.0, "dql": 3.0}
    assert parse_alpha(" dql = 0.5 ,", agents) == {"dql": 0.5}
    assert parse_alpha("ofql=0", agents) == {"ofql": 0.0}
    for bad, why in [
        ("3", "agent=value"),
        ("=3", "agent=value"),
        ("sac=3", "not among the agents"),
        ("ofql=1,ofql=2", "twice"),
        ("ofql=x", "must be a number"),
        ("ofql=-1", ">= 0"),
        ("ofql=nan", ">= 0"),
        (",", "no agent=value"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_alpha(bad, agents)
    with pytest.raises(ValueError, match="not among"):
        parse_alpha("fql=3", ("ofql", "dql"))


def test_alpha_comes_from_flag_then_dataset_config_then_default():
    import argparse

    from onestep.rl.bench import DATASETS, _agent_settings
    from onestep.rl.bench_alpha import config_alpha, run_alphas
    from onestep.rl.training import build_agent

    # configs/{ofql,dql}/hopper.yaml carry the Q weights swept on hopper-replay; fql's has none.
    assert (config_alpha("ofql", "hopper"), config_alpha("dql", "hopper")) == (10.0, 3.0)
    assert config_alpha("fql", "hopper") is None and config_alpha("ofql", "no-such") is None
    assert (config_alpha("ofql", "walker2d"), config_alpha("dql", "walker2d")) == (100.0, 10.0)
    assert config_alpha("fql", "walker2d") is None
    assert (config_alpha("ofql", "reacher"), config_alpha("dql", "reacher")) == (10.0, 10.0)
    hopper = next(s for s in DATASETS if s.name == "hopper-replay")
    chosen = run_alphas(("ofql", "fql", "dql"), {"dql": 0.5}, hopper.config)
    assert {a: (c["value"], c["source"]) for a, c in chosen.items()} == {
        "ofql": (10.0, "config"),
        "fql": (10.0, "default"),
        "dql": (0.5, "--alpha"),
    }
    assert all(c["source"] == "default" for c in run_alphas(("ofql", "dql"), None, None).values())
    args = argparse.Namespace(candidates=None)
    alphas = {
        a: build_agent(a, 3, 2, **_agent_settings(args, c["value"])).hparams["alpha"]
        for a, c in chosen.items()
    }
    assert alphas == {
        "ofql": 10.0,
        "fql": 10.0,
        "dql": 0.5,
    }
    assert _agent_settings(args, None) == {}


def test_every_dataset_config_is_shipped_for_every_agent():
    # A misspelt DatasetSpec.config would silently leave every agent at its default alpha.
    from importlib.resources import files

    from onestep.rl.bench import AGENT_NAMES, DATASETS

    named = [s for s in DATASETS if s.config]
    assert named, "hopper-replay names the hopper configs"
    for spec in named:
        for agent in AGENT_NAMES:
            path = files("onestep.rl") / "configs" / agent / f"{spec.config}.yaml"
            assert path.is_file(), f"{spec.name}: no configs/{agent}/{spec.config}.yaml"


def test_datasets_option_names_every_dataset_and_selects_by_name():
    from onestep.rl.bench import DATASETS, DEFAULT_DATASETS, _select_specs, build_parser

    parser = build_parser()
    help_text = " ".join(parser.format_help().split())
    for spec in DATASETS:
        assert spec.name in help_text.replace("- ", "-"), spec.name
    args = parser.parse_args([])
    assert tuple(s.name for s in _select_specs(args)) == DEFAULT_DATASETS
    names = "halfcheetah-replay,hopper-medium,walker2d-replay,reacher-replay"
    args = parser.parse_args(["--datasets", names])
    picked = _select_specs(args)
    assert {s.name: s.env for s in picked} == {
        "halfcheetah-replay": "HalfCheetah-v5",
        "hopper-medium": "Hopper-v5",
        "walker2d-replay": "Walker2d-v5",
        "reacher-replay": "Reacher-v5",
    }
    # Only walker2d-replay's and reacher-replay's alphas were swept to config values
    # (BENCHMARKS.md); the others train each agent at its default.
    assert {s.name: s.config for s in picked} == {
        "halfcheetah-replay": None,
        "hopper-medium": None,
        "walker2d-replay": "walker2d",
        "reacher-replay": "reacher",
    }


def test_report_names_every_agents_alpha():
    from onestep.rl.bench_alpha import run_alphas

    agents = ("ofql", "fql", "dql")
    md = report(_results(dql_ms=1.0))
    assert "Policy-loss weight alpha: each agent's default (ofql 1, fql 10, dql 1)." in md
    md = report({**_results(dql_ms=1.0), "alpha": {"ofql": 10.0, "dql": 3.0}})
    assert "alpha: ofql 10 (`--alpha`), fql 10 (default), dql 3 (`--alpha`)." in md
    per_dataset = {
        "hopper-replay": run_alphas(agents, None, "hopper"),
        "invertedpendulum-medium-expert": run_alphas(agents, None, None),
    }
    md = report({**_results(dql_ms=1.0), "alpha_by_dataset": per_dataset})
    assert (
        "Policy-loss weight alpha, per dataset: hopper-replay: ofql 10 (configs/ofql/hopper.yaml), "
        "fql 10 (default), dql 3 (configs/dql/hopper.yaml); invertedpendulum-medium-expert: each "
        "agent's default (ofql 1, fql 10, dql 1)."
    ) in md


def test_data_folder_is_reused_and_collected_into(tmp_path, monkeypatch):
    import onestep.rl.collect as collect_module
    from onestep.rl.bench import SMOKE_DATASETS, _collect

    spec = SMOKE_DATASETS[0]
    calls = []
    monkeypatch.setattr(collect_module, "collect", lambda *a, **k: calls.append((a, k)))
    shared = tmp_path / "shared" / "data"
    path = _collect(spec, shared, 3, progress=False)
    assert path.parent == shared and path.name.endswith("-s3")
    assert calls[0][0][3] == path
    assert calls[0][1]["cache_dir"] == tmp_path / "shared" / "behavior_policies"
    (path / "data").mkdir(parents=True)
    assert _collect(spec, shared, 3, progress=False) == path
    assert len(calls) == 1  # the second call found the collected data and collected nothing


def test_a_run_without_bandit_or_timing_reports_what_it_skipped():
    skipped = {**_results(dql_ms=1.0), "timing": None, "bandit": None}
    md = report(skipped)
    assert "### Speed: not measured in this run (`--no-timing`)" in md
    assert "Action latency" not in md and "Bandit" not in md
    assert "goal OFQL ≥ DQL: met" in md  # the returns' verdict stays


def test_smoke_refuses_to_skip_what_it_gates_on(tmp_path, capsys):
    from onestep.rl.cli import main

    for flag in ("--no-bandit", "--no-timing"):
        assert main(["bench", "--smoke", flag, "--output", str(tmp_path)]) == 2
        assert "--smoke gates on the bandit and the timings" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_no_bandit_and_no_timing_skip_the_work(tmp_path, monkeypatch):
    import argparse

    import onestep.rl.bench_bandit as bandit_module
    import onestep.rl.bench_timing as timing_module
    from onestep.rl.bench import _bandit_and_timing

    def refuse(*a, **k):
        raise AssertionError("skipped work ran")

    monkeypatch.setattr(bandit_module, "bandit_coverage_run", refuse)
    monkeypatch.setattr(timing_module, "time_agents", refuse)
    args = argparse.Namespace(no_bandit=True, no_timing=True, smoke=False, candidates=None)
    assert _bandit_and_timing(args, ("ofql",), 0) == {"bandit": None, "timing": None}
    monkeypatch.setattr(timing_module, "time_agents", lambda names, **k: {"names": names})
    args.no_timing = False
    assert _bandit_and_timing(args, ("ofql",), 0) == {
        "bandit": None,
        "timing": {"names": ("ofql",)},
    }
    monkeypatch.setattr(bandit_module, "bandit_coverage_run", lambda agents, **k: k["seed"])
    args.no_bandit = False
    assert _bandit_and_timing(args, ("ofql",), 7)["bandit"] == 7  # the run's seed

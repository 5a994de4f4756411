"""``onestep-rl bench-merge``: runs made side by side join into the table one ``--seeds`` run
would write, and runs that do not belong together are refused with the reason."""

import json

import pytest

from onestep.rl.bench import report
from onestep.rl.bench_alpha import run_alphas
from onestep.rl.bench_merge import merge_results
from onestep.rl.bench_seeds import seed_summary

AGENTS = ["ofql", "fql", "dql"]


def _entry(ret: float) -> dict:
    return {
        "mean_return": ret,
        "std_return": 1.0,
        "normalized_mean": ret / 10,
        "normalized_std": 0.1,
        "returns": [ret],
        "reference": "d4rl",
        "returns_by_iteration": {10: ret},
    }


def _run(seed: int, rets: dict, act_dql: float = 1.0, dataset: str = "hopper-replay") -> dict:
    row = {"dataset": dataset, "seed": seed, "behaviour_return": 5.0}
    row.update({a: _entry(rets[a]) for a in AGENTS})
    return {
        "agents": AGENTS,
        "candidates": None,
        "alpha": None,
        "iterations": 10,
        "episodes": 2,
        "eval_iterations": [10],
        "seed": seed,
        "seeds": [seed],
        "alpha_by_dataset": {dataset: run_alphas(AGENTS, None, "hopper")},
        "returns": {dataset: row},
        "timing": {
            "act_ms": {"ofql": 0.1, "fql": 0.1, "dql": act_dql, "dql_chain": 0.5},
            "step_ms": {"ofql": 5.0, "fql": 6.0, "dql": 10.0},
            "obs_dim": 11,
            "act_dim": 3,
            "threads": 1,
            "candidates": {"ofql": 1, "fql": 1, "dql": 50},
        },
        "bandit": {
            "modes": ["a", "b"],
            "coverage": {"ofql": {"fractions": [0.5, 0.0094 * seed], "all_covered": seed > 5}},
        },
        "wall_s": 100.0 + seed,
    }


RUNS = [
    _run(6, {"ofql": 30.0, "fql": 20.0, "dql": 10.0}, act_dql=0.8),
    _run(5, {"ofql": 10.0, "fql": 20.0, "dql": 40.0}, act_dql=1.2),
]


def test_merge_labels_rows_by_seed_and_recomputes_the_summary():
    merged = merge_results(RUNS, ["a", "b"])
    assert list(merged["returns"]) == ["hopper-replay s5", "hopper-replay s6"]
    assert merged["seeds"] == [5, 6] and merged["seed"] == 5
    assert merged["across_seeds"] == seed_summary(merged["returns"], AGENTS)
    diff = merged["across_seeds"]["hopper-replay"]["ofql_minus_dql"]
    assert diff["mean"] == pytest.approx(-5.0) and diff["ofql_at_least_dql"] == 1
    assert merged["timing"]["act_ms"]["dql"] == pytest.approx(1.0)  # median of 0.8 and 1.2
    assert merged["timing_by_run"]["a"]["act"] == pytest.approx(8.0)
    assert list(merged["bandit_by_seed"]) == ["5", "6"]
    md = report(merged)
    assert "seeds 5, 6 (each with its own collected data)" in md
    assert "| hopper-replay | 5, 6 | 20.0 ± 14.1 |" in md
    assert "Merged from 2 runs" in md and "a: 8.0× / 2.00×" in md and "b: 12.0×" in md
    assert "| ofql (seed 5) | 0.500 | 0.047 | False |" in md
    assert "| ofql (seed 6) | 0.500 | 0.056 | True |" in md


def test_runs_on_other_datasets_join_in_dataset_order():
    other = _run(5, {"ofql": 1.0, "fql": 1.0, "dql": 1.0}, dataset="halfcheetah-replay")
    merged = merge_results([*RUNS, other], ["a", "b", "c"])
    assert list(merged["returns"]) == [
        "hopper-replay s5",
        "hopper-replay s6",
        "halfcheetah-replay s5",
    ]
    assert set(merged["alpha_by_dataset"]) == {"hopper-replay", "halfcheetah-replay"}


def _split(run: dict, agents: list[str]) -> dict:
    """``run`` as if made with ``--agents`` ``agents`` (its rows and timings keep only those)."""
    part = json.loads(json.dumps(run))
    part["agents"] = agents
    for row in part["returns"].values():
        for a in AGENTS:
            if a not in agents:
                del row[a]
    timing = part["timing"]
    for kind in ("act_ms", "step_ms", "candidates"):
        timing[kind] = {a: v for a, v in timing[kind].items() if a.split("_")[0] in agents}
    return part


def test_runs_of_different_agents_on_the_same_data_join_into_one_row():
    parts = [_split(RUNS[0], ["ofql", "dql"]), _split(RUNS[0], ["fql"])]
    parts += [_split(RUNS[1], ["fql"]), _split(RUNS[1], ["dql", "ofql"])]
    parts[1]["timing"]["act_ms"]["fql"] = 0.3
    merged = merge_results(parts, ["a6", "f6", "f5", "a5"])
    whole = merge_results(json.loads(json.dumps(RUNS)), ["a", "b"])  # as read from files
    assert merged["agents"] == AGENTS
    assert merged["returns"] == whole["returns"]
    assert merged["across_seeds"] == whole["across_seeds"]
    assert merged["alpha_by_dataset"] == whole["alpha_by_dataset"]
    assert merged["timing"]["act_ms"]["fql"] == pytest.approx(0.2)  # median of 0.3 and 0.1
    assert merged["timing"]["act_ms"]["dql"] == pytest.approx(1.0)  # from a6 and a5 only
    assert merged["timing"]["candidates"] == {"ofql": 1, "fql": 1, "dql": 50}
    assert merged["timing_by_run"]["f6"] is None
    assert "| fql | 0.200 |" in report(merged)


def test_parts_of_a_row_trained_on_other_data_are_refused():
    other = _split(RUNS[0], ["fql"])
    other["returns"]["hopper-replay"]["behaviour_return"] = 6.0
    with pytest.raises(ValueError, match="seed 6 was trained on different data in f6"):
        merge_results([_split(RUNS[0], ["ofql", "dql"]), other], ["a6", "f6"])
    partial = _split(RUNS[0], ["fql"])
    partial["agents"] = ["fql", "dql"]
    with pytest.raises(ValueError, match="f6 lists dql but its hopper-replay seed 6 row has no"):
        merge_results([RUNS[1], partial], ["x", "f6"])
    clash = _split(RUNS[0], ["fql"])
    clash["timing"]["candidates"]["fql"] = 5
    with pytest.raises(ValueError, match="fql's candidates: 1 vs 5"):
        merge_results([RUNS[1], clash, _split(RUNS[0], ["ofql", "dql"])], ["x", "f6", "a6"])


def test_the_same_alpha_from_a_flag_and_from_a_config_merges():
    # Seeds run before a config existed pass the picked alpha by hand; later seeds read it from
    # the config: the agents train alike, so the runs join (the first run's source is named).
    flagged = _run(5, {"ofql": 10.0, "fql": 20.0, "dql": 40.0})
    flagged["alpha_by_dataset"] = {
        "hopper-replay": run_alphas(AGENTS, {"ofql": 10.0, "dql": 3.0}, None)
    }
    from_config = _run(6, {"ofql": 30.0, "fql": 20.0, "dql": 10.0})
    merged = merge_results([flagged, from_config], ["flag5", "config6"])
    ofql = merged["alpha_by_dataset"]["hopper-replay"]["ofql"]
    assert (ofql["value"], ofql["source"]) == (10.0, "--alpha")
    assert merged["seeds"] == [5, 6]
    other = _run(6, {"ofql": 30.0, "fql": 20.0, "dql": 10.0})
    other["alpha_by_dataset"] = {
        "hopper-replay": run_alphas(AGENTS, {"ofql": 3.0, "dql": 3.0}, None)
    }
    with pytest.raises(
        ValueError, match="config6 trains ofql on hopper-replay with other alphas"
    ) as err:
        merge_results([flagged, other], ["flag5", "config6"])
    # The message names both values and what to do instead.
    assert "(3 from --alpha vs 10 from --alpha); merge the runs of each alpha separately" in str(
        err.value
    )


def _changed(key: str, value) -> dict:
    run = json.loads(json.dumps(_run(7, {"ofql": 1.0, "fql": 1.0, "dql": 1.0})))
    run[key] = value
    return run


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        ([RUNS[0]], "at least two"),
        ([RUNS[0], _changed("iterations", 20)], "differ in iterations: 20 vs 10"),
        ([RUNS[0], _changed("agents", ["ofql", "dql"])], "seed 7 has no fql in any run"),
        ([RUNS[0], RUNS[0]], "ofql on hopper-replay seed 6 is in both"),
        (
            [
                RUNS[0],
                _changed("alpha_by_dataset", {"hopper-replay": run_alphas(AGENTS, None, None)}),
            ],
            "other alphas",
        ),
    ],
    ids=["one-run", "iterations", "missing-agent", "same-row", "alphas"],
)
def test_runs_that_do_not_belong_together_are_refused(runs, message):
    with pytest.raises(ValueError, match=message):
        merge_results(runs, [f"run{i}" for i in range(len(runs))])


def test_cli_writes_the_report_and_names_a_bad_folder(tmp_path, capsys):
    from onestep.rl.cli import main

    folders = []
    for i, run in enumerate(RUNS):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(run))
        folders.append(str(folder))
    out = tmp_path / "merged"
    assert main(["bench-merge", *folders, "--output", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["seeds"] == [5, 6]
    assert "hopper-replay s6" in (out / "report.md").read_text()
    capsys.readouterr()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["bench-merge", folders[0], str(empty), "--output", str(out)]) == 1
    assert f"{empty}: no results.json" in capsys.readouterr().err
    (empty / "results.json").write_text("{not json")
    assert main(["bench-merge", folders[0], str(empty), "--output", str(out)]) == 1
    assert "not valid JSON" in capsys.readouterr().err
    (empty / "results.json").write_text(json.dumps({"agents": []}))
    assert main(["bench-merge", folders[0], str(empty), "--output", str(out)]) == 1
    assert "missing iterations, returns, timing" in capsys.readouterr().err
    assert main(["bench-merge", *folders, "--output", folders[0]]) == 1
    assert "would be overwritten" in capsys.readouterr().err
    assert (tmp_path / "run0" / "results.json").read_text() == json.dumps(RUNS[0])


def test_runs_made_without_timing_or_bandit_add_none():
    parts = [_split(RUNS[0], ["ofql", "dql"]), _split(RUNS[0], ["fql"])]
    parts[1]["timing"] = parts[1]["bandit"] = None  # the extra run: --no-timing --no-bandit
    merged = merge_results(parts, ["a6", "f6"])
    assert merged["timing"]["act_ms"] == {"ofql": 0.1, "dql": 0.8, "dql_chain": 0.5}
    assert list(merged["timing_by_run"]) == ["a6"]
    assert list(merged["bandit_by_seed"]) == ["6"]
    md = report(merged)
    assert "| fql | not timed | not timed |" in md and "| ofql | 0.100 |" in md
    assert "Merged from 2 runs, 1 of them timed (the others ran with `--no-timing`)" in md
    assert "Each run's DQL ÷ OFQL action / training-iteration time: a6: 8.0×" in md
    dql_apart = [_split(RUNS[0], ["ofql"]), _split(RUNS[0], ["dql", "fql"])]
    dql_apart[1]["timing"] = None
    md = report(merge_results(dql_apart, ["o6", "df6"]))
    assert "No run timed both OFQL and DQL, so no ratio is measured side by side." in md
    for part in parts:
        part["timing"] = None
    merged = merge_results(parts, ["a6", "f6"])
    assert merged["timing"] is None and merged["timing_by_run"] == {}
    assert "### Speed: not measured in this run (`--no-timing`)" in report(merged)

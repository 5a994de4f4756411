"""Late-evaluation scoring: where the evaluations fall, how episodes pool, and the whole run."""

import numpy as np
import pytest

from onestep.rl.callbacks import EvalCallback
from onestep.rl.collect import collect
from onestep.rl.data import OfflineDataModule
from onestep.rl.evaluation import evaluate_policy, pool_results
from onestep.rl.scoring import fit_and_score, late_iterations
from onestep.rl.training import build_agent

ENV = "InvertedPendulum-v5"


def test_late_iterations_spread_over_the_second_half_and_end_at_the_last():
    assert late_iterations(2000, 3) == [1333, 1667, 2000]
    assert late_iterations(3000, 2) == [2250, 3000]
    assert late_iterations(7, 1) == [7]
    assert late_iterations(2, 2) == [2]  # 1.5 rounds to 2: duplicates collapse
    for bad in ((0, 1), (10, 0), (3, 4)):
        with pytest.raises(ValueError):
            late_iterations(*bad)


def test_pooling_equals_one_evaluation_over_all_the_episodes():
    policy = lambda obs: np.full((1, 1), 0.3)  # noqa: E731 - deterministic policy
    meta = {"ref_min_score": 0.0, "ref_max_score": 20.0}
    first = evaluate_policy(policy, ENV, 2, seed=0, dataset_metadata=meta)
    second = evaluate_policy(policy, ENV, 1, seed=2, dataset_metadata=meta)
    whole = evaluate_policy(policy, ENV, 3, seed=0, dataset_metadata=meta)
    pooled = pool_results([first, second], meta)
    assert pooled.returns == whole.returns and pooled.lengths == whole.lengths
    assert pooled.mean_return == pytest.approx(whole.mean_return)
    assert pooled.std_return == pytest.approx(whole.std_return)
    assert pooled.normalized_mean == pytest.approx(whole.normalized_mean)
    assert pooled.normalized_std == pytest.approx(whole.normalized_std)
    with pytest.raises(ValueError, match="at least one"):
        pool_results([])
    other = evaluate_policy(lambda obs: np.zeros((1, 1)), "Pendulum-v1", 1)
    with pytest.raises(ValueError, match="different environments"):
        pool_results([first, other])


def test_eval_callback_rejects_an_empty_or_non_positive_schedule():
    for bad in ([], [0, 5]):
        with pytest.raises(ValueError, match="at must list"):
            EvalCallback(ENV, at=bad)


def test_fit_and_score_evaluates_at_the_late_iterations_and_pools_them(tmp_path):
    data = tmp_path / "random"
    collect(ENV, "random", 600, data, seed=0, progress=False)
    dm = OfflineDataModule(str(data), batch_size=32, seed=0)
    dm.setup("fit")
    agent = build_agent("ofql", dm.obs_dim, dm.act_dim, hidden=16, depth=1, seed=0)
    scored = fit_and_score(
        agent, dm, 12, ENV, episodes=2, points=3, checkpoint=tmp_path / "a.ckpt", progress=False
    )
    assert list(scored.by_iteration) == [8, 10, 12]
    assert len(scored.result.returns) == 6 and agent.iteration == 12
    assert scored.result.mean_return == pytest.approx(np.mean(list(scored.by_iteration.values())))
    assert (tmp_path / "a.ckpt").exists() and scored.to_dict()["returns_by_iteration"]
    with pytest.raises(ValueError, match="fresh agent"):
        fit_and_score(agent, dm, 4, ENV, episodes=1, progress=False)


@pytest.mark.parametrize("verb", ["bench", "demo"])
def test_an_impossible_evaluation_schedule_is_refused_before_any_work(verb, tmp_path, capsys):
    from onestep.rl.cli import main

    argv = [verb, "--iterations", "2", "--eval-points", "3", "--output", str(tmp_path)]
    assert main(argv) == 1
    assert "lower --eval-points" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()

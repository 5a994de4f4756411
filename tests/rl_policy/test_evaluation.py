"""evaluate_policy: seeded episodes, scores, videos that never fail the evaluation."""

import json

import numpy as np
import pytest

from onestep.rl import evaluation
from onestep.rl.behavior.policies import RandomPolicy
from onestep.rl.evaluation import EvalResult, evaluate_policy


def test_random_policy_on_inverted_pendulum_is_finite_and_deterministic():
    first = evaluate_policy(RandomPolicy(1, seed=0), "InvertedPendulum-v5", 4, seed=7)
    again = evaluate_policy(RandomPolicy(1, seed=0), "InvertedPendulum-v5", 4, seed=7)
    assert len(first.returns) == 4 and np.isfinite(first.returns).all()
    assert first.returns == again.returns and first.lengths == again.lengths
    assert first.mean_return == pytest.approx(np.mean(first.returns))
    assert first.std_return == pytest.approx(np.std(first.returns))
    assert first.normalized_mean is None and "InvertedPendulum-v5" in str(first.normalized_error)
    json.dumps(first.to_dict())
    assert first.summary().startswith("InvertedPendulum-v5: return ")


def test_episode_k_uses_seed_plus_k():
    zero = lambda obs: np.zeros((1, 1))  # noqa: E731 - deterministic policy
    both = evaluate_policy(zero, "InvertedPendulum-v5", 2, seed=5)
    second = evaluate_policy(zero, "InvertedPendulum-v5", 1, seed=6)
    assert both.returns[1] == second.returns[0]


def test_normalised_scores_use_the_reference():
    meta = {"ref_min_score": 0.0, "ref_max_score": 10.0}
    result = evaluate_policy(
        lambda obs: np.zeros(1), "InvertedPendulum-v5", 2, dataset_metadata=meta
    )
    expected = 100 * np.array(result.returns) / 10.0
    assert result.normalized_mean == pytest.approx(expected.mean())
    assert result.normalized_std == pytest.approx(expected.std())
    assert result.reference is not None and result.reference.startswith("dataset reference")
    assert "normalised" in result.summary()


def test_hopper_is_scored_against_d4rl():
    result = evaluate_policy(lambda obs: np.zeros((1, 3)), "Hopper-v5", 1, max_episode_steps=50)
    assert result.lengths == [50]
    assert result.normalized_mean == pytest.approx(
        100 * (result.returns[0] + 20.272305) / (3234.3 + 20.272305)
    )


def test_non_finite_actions_raise():
    with pytest.raises(ValueError, match="non-finite action"):
        evaluate_policy(lambda obs: np.full((1, 1), np.nan), "InvertedPendulum-v5", 1)


def test_missing_renderer_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluation, "_make_render_env", lambda *a: (None, "no OpenGL here"))
    result = evaluate_policy(
        lambda obs: np.zeros(1), "InvertedPendulum-v5", 1, video_dir=tmp_path, video_episodes=1
    )
    assert result.videos == [] and result.video_error == "no OpenGL here"


def test_video_is_written_when_a_renderer_works(tmp_path):
    result = evaluate_policy(
        lambda obs: np.zeros(1),
        "InvertedPendulum-v5",
        2,
        video_dir=tmp_path,
        video_episodes=1,
        max_episode_steps=10,
    )
    if result.video_error is not None:
        pytest.skip(f"no renderer on this machine: {result.video_error}")
    assert len(result.videos) == 1 and (tmp_path / result.videos[0]).stat().st_size > 0


def test_eval_result_round_trips_through_json():
    result = EvalResult("X-v0", 0, [1.0, 3.0], [1, 3], 2.0, 1.0, videos=["a.mp4"])
    assert json.loads(json.dumps(result.to_dict()))["videos"] == ["a.mp4"]
    assert "no normalised score" in result.summary()

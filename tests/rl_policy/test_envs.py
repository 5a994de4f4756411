"""Environments with unit action boxes, and D4RL normalised scores."""

import json

import gymnasium as gym
import numpy as np
import pytest

from onestep.rl.envs import (
    REFERENCE_SCORES,
    make_env,
    normalized_score,
    score_reference,
    task_name,
)


def test_make_env_rescales_actions_to_the_unit_box():
    env = make_env("InvertedPendulum-v5", seed=0)
    unit, native = env.action_space, env.unwrapped.action_space
    assert isinstance(unit, gym.spaces.Box) and isinstance(native, gym.spaces.Box)
    assert np.all(unit.low == -1) and np.all(unit.high == 1)
    assert np.all(native.low == -3) and np.all(native.high == 3)
    assert env.spec is not None
    assert json.loads(env.spec.to_json())["additional_wrappers"][0]["name"] == "RescaleAction"
    env.close()


def test_make_env_leaves_unit_boxes_alone_and_seeds():
    env = make_env("Hopper-v5", seed=3)
    assert env.action_space == env.unwrapped.action_space
    first = env.reset(seed=3)[0]
    again = make_env("Hopper-v5").reset(seed=3)[0]
    np.testing.assert_array_equal(first, again)
    env.close()


def test_make_env_errors():
    with pytest.raises(ValueError, match="cannot make environment 'NoSuchEnv-v0'"):
        make_env("NoSuchEnv-v0")
    with pytest.raises(ValueError, match="Box action space"):
        make_env("CartPole-v1")  # discrete actions


def test_normalized_score_formula_with_d4rl_references():
    random, expert = REFERENCE_SCORES["hopper"]
    assert (random, expert) == (-20.272305, 3234.3)  # D4RL d4rl/infos.py
    assert normalized_score("Hopper-v5", random) == pytest.approx(0.0)
    assert normalized_score("Hopper-v5", expert) == pytest.approx(100.0)
    ret = 1500.0
    assert normalized_score("hopper-medium-v2", ret) == pytest.approx(
        100 * (ret - random) / (expert - random)
    )
    assert normalized_score("Walker2d-v5", 4592.3) == pytest.approx(100.0)
    assert normalized_score("HalfCheetah-v5", -280.178953) == pytest.approx(0.0)


def test_normalized_score_is_none_without_a_reference():
    assert normalized_score("InvertedPendulum-v5", 100.0) is None
    assert score_reference("Pendulum-v1") is None


def test_dataset_references_can_be_used():
    meta = {"ref_min_score": 10.0, "ref_max_score": 110.0}
    assert normalized_score("InvertedPendulum-v5", 60.0, meta) == pytest.approx(50.0)
    ref = score_reference("Hopper-v5", meta, reference="dataset")
    assert ref is not None and ref.source == "dataset" and "dataset metadata" in ref.describe()
    assert normalized_score("Hopper-v5", 60.0, meta, reference="dataset") == pytest.approx(50.0)
    auto = score_reference("Hopper-v5", meta)  # D4RL's when the task has them
    assert auto is not None and auto.source == "d4rl" and "v2" in auto.describe()
    assert score_reference("InvertedPendulum-v5", meta, reference="d4rl") is None
    with pytest.raises(ValueError, match="reference must be"):
        score_reference("Hopper-v5", meta, reference="best")


@pytest.mark.parametrize(
    ("env_id", "task"),
    [
        ("Hopper-v5", "hopper"),
        ("halfcheetah-medium-expert-v2", "halfcheetah"),
        ("mujoco/walker2d/expert-v0", "walker2d"),
        ("InvertedPendulum-v5", "invertedpendulum"),
    ],
)
def test_task_name(env_id, task):
    assert task_name(env_id) == task

"""onestep-rl's environments run headless on a CPU machine."""

import numpy as np


def test_mujoco_hopper_steps_headless():
    import gymnasium as gym

    env = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape
    rewards = []
    for _ in range(10):
        obs, reward, *_ = env.step(env.action_space.sample())
        rewards.append(float(reward))
    assert np.isfinite(obs).all() and np.isfinite(rewards).all()
    env.close()

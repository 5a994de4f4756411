"""onestep-rl's environments run headless on a CPU machine."""

import numpy as np


def test_mujoco_hopper_steps_headless():
    import gymnasium as gym

    env = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape
    for _ in range(10):
        obs, reward, *_ = env.step(env.action_space.sample())
    assert np.isfinite(obs).all() and np.isfinite(reward)
    env.close()

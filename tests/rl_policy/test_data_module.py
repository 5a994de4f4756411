"""OfflineDataModule batches, normalisation and action checks; dataset/env mismatch errors."""

import lightning as L
import numpy as np
import pytest
import torch

from onestep.rl.data import (
    OfflineDataModule,
    check_dataset_matches_env,
    normalize_rewards,
    observation_stats,
    save_d4rl,
    save_minari,
    to_unit_actions,
    toy_dataset,
)
from onestep.rl.envs import make_env


@pytest.fixture
def toy_file(tmp_path):
    data = toy_dataset(lengths=(40, 30, 50), ends=("terminal", "timeout", "none"), obs_dim=5)
    save_d4rl(data, tmp_path / "toy.hdf5")
    return data, str(tmp_path / "toy.hdf5")


def test_batches_have_the_documented_keys_shapes_and_dtypes(toy_file):
    _, path = toy_file
    dm = OfflineDataModule(path, batch_size=16, batches_per_epoch=3)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 3
    batch = batches[0]
    assert set(batch) == {"obs", "action", "reward", "next_obs", "done"}
    shapes = {k: tuple(v.shape) for k, v in batch.items()}
    assert shapes == {
        "obs": (16, 5),
        "action": (16, 2),
        "reward": (16,),
        "next_obs": (16, 5),
        "done": (16,),
    }
    assert all(v.dtype == torch.float32 for v in batch.values())
    assert (dm.obs_dim, dm.act_dim, dm.env_id) == (5, 2, "Hopper-v5")
    assert dm.obs_mean.shape == (5,) and dm.obs_std.dtype == torch.float32


def test_batches_are_raw_rows_and_done_is_terminals_only(toy_file):
    data, path = toy_file
    dm = OfflineDataModule(path, batch_size=512, batches_per_epoch=1)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    obs = torch.from_numpy(data.observations)
    rows = (batch["obs"][:, None, :] == obs[None]).all(-1).float().argmax(1)  # (B,)
    torch.testing.assert_close(batch["obs"], obs[rows])  # raw, not normalised
    torch.testing.assert_close(batch["next_obs"], torch.from_numpy(data.next_observations)[rows])
    torch.testing.assert_close(batch["done"], torch.from_numpy(data.terminals)[rows].float())
    assert batch["done"].sum() > 0  # row 39 (terminal) is drawn among 512 of 120 rows
    assert not torch.from_numpy(data.timeouts)[rows][batch["done"] > 0].any()


def test_sampling_is_seeded_and_changes_between_epochs(toy_file):
    _, path = toy_file

    def first_batches(seed, epoch):
        dm = OfflineDataModule(path, batch_size=8, batches_per_epoch=2, seed=seed)
        dm.setup()
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        return [b["reward"] for b in loader]

    same = first_batches(0, 0), first_batches(0, 0)
    torch.testing.assert_close(same[0], same[1])
    assert not torch.equal(first_batches(0, 0)[0], first_batches(1, 0)[0])
    assert not torch.equal(first_batches(0, 0)[0], first_batches(0, 1)[0])


class _CountBatches(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = 0

    def training_step(self, batch, batch_idx):
        self.seen += len(batch["obs"])
        return (self.w * batch["reward"].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_runs_bounded_by_max_steps(toy_file):
    _, path = toy_file
    model = _CountBatches()
    trainer = L.Trainer(
        max_steps=5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, datamodule=OfflineDataModule(path, batch_size=4, batches_per_epoch=2))
    assert model.seen == 20 and trainer.global_step == 5


def test_iql_reward_normalisation_formula():
    data = toy_dataset(lengths=(10, 20, 5), ends=("timeout", "terminal", "none"))
    returns = data.episode_returns()
    scaled = normalize_rewards(data, "iql")
    factor = 1000.0 / (returns.max() - returns.min())
    np.testing.assert_allclose(scaled.rewards, data.rewards * factor, rtol=1e-6)
    np.testing.assert_allclose(np.ptp(scaled.episode_returns()), 1000.0, rtol=1e-5)
    np.testing.assert_allclose(normalize_rewards(data, "antmaze").rewards, data.rewards - 1)
    np.testing.assert_array_equal(normalize_rewards(data, "none").rewards, data.rewards)
    with pytest.raises(ValueError, match="unknown reward normalisation"):
        normalize_rewards(data, "bogus")


def test_datamodule_applies_reward_normalisation(toy_file):
    data, path = toy_file
    dm = OfflineDataModule(path, normalize_rewards="iql")
    dm.setup()
    returns = data.episode_returns()
    assert dm.reward_scale == pytest.approx(1000.0 / (returns.max() - returns.min()))
    np.testing.assert_allclose(dm.dataset.rewards, data.rewards * dm.reward_scale, rtol=1e-6)


def test_observation_std_is_floored():
    data = toy_dataset()
    data.observations[:, 1] = 7.0
    mean, std = observation_stats(data)
    assert mean[1] == 7.0 and std[1] == pytest.approx(1e-3)
    np.testing.assert_allclose(std[0], data.observations[:, 0].std(), rtol=1e-5)


def test_actions_in_other_bounds_are_rescaled_to_unit(tmp_path):
    data = toy_dataset(env_id="Pendulum-v1", act_dim=1, obs_dim=3)
    data.actions[:] = np.linspace(-2, 2, len(data), dtype=np.float32)[:, None]
    data.metadata["action_space"] = {"type": "Box", "dtype": "float32", "shape": [1]}
    data.metadata["action_space"].update(low=[-2.0], high=[2.0])
    unit = to_unit_actions(data)
    np.testing.assert_allclose(unit.actions, data.actions / 2, atol=1e-6)
    assert unit.metadata["action_rescaled_from"] == {"low": [-2.0], "high": [2.0]}
    # Without metadata the registered env's native bounds ([-2, 2] for Pendulum-v1) are used.
    del data.metadata["action_space"]
    np.testing.assert_allclose(to_unit_actions(data).actions, data.actions / 2, atol=1e-6)


def test_actions_beyond_the_bounds_raise(tmp_path):
    data = toy_dataset()
    data.actions[3, 1] = 1.5
    save_minari(data, tmp_path / "bad")
    with pytest.raises(ValueError, match=r"bad.*exceed the bounds.*row 3 dim 1 = 1\.5"):
        OfflineDataModule(str(tmp_path / "bad")).setup()


def test_mismatch_error_names_dataset_and_environment():
    data = toy_dataset(obs_dim=5, act_dim=3, env_id="Hopper-v5")
    data.source = "data/hopper-expert"
    env = make_env("Hopper-v5")
    with pytest.raises(ValueError) as err:
        check_dataset_matches_env(data, env)
    message = str(err.value)
    for part in ("data/hopper-expert", "[12, 5]", "Hopper-v5", "Box(", "(11,)", "observation"):
        assert part in message
    good = toy_dataset(obs_dim=11, act_dim=3)
    check_dataset_matches_env(good, env)  # no error
    good.actions[0, 0] = -1.2
    with pytest.raises(
        ValueError, match=r"does not match environment Hopper-v5.*exceed the bounds"
    ):
        check_dataset_matches_env(good, env)
    env.close()


def test_datamodule_argument_errors(toy_file):
    _, path = toy_file
    with pytest.raises(ValueError, match="normalize_rewards"):
        OfflineDataModule(path, normalize_rewards="iqll")
    with pytest.raises(RuntimeError, match="setup"):
        _ = OfflineDataModule(path).obs_mean


def test_native_bound_actions_match_a_unit_box_env():
    data = toy_dataset(obs_dim=3, act_dim=1, env_id="Pendulum-v1")
    data.actions[:] = 1.8  # inside Pendulum-v1's native [-2, 2]
    env = make_env("Pendulum-v1")
    check_dataset_matches_env(data, env)  # mapped to 0.9 in make_env's [-1, 1]
    data.actions[0] = 2.5
    with pytest.raises(ValueError, match="exceed the bounds"):
        check_dataset_matches_env(data, env)
    env.close()

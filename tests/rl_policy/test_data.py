"""onestep-rl datasets: the container, Minari and D4RL files, clear errors on bad files."""

import json

import h5py
import numpy as np
import pytest

from onestep.rl.data import (
    OfflineDataset,
    load_d4rl,
    load_dataset,
    save_d4rl,
    save_minari,
    toy_dataset,
)
from onestep.rl.data.d4rl import derive_next_observations

KEYS = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")


def assert_same_transitions(a, b):
    for key in KEYS:
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
        assert getattr(a, key).dtype == getattr(b, key).dtype, key


def test_episode_returns_split_on_terminals_timeouts_and_the_end():
    data = toy_dataset(lengths=(4, 3, 5), ends=("terminal", "timeout", "none"))
    expected = [data.rewards[:4].sum(), data.rewards[4:7].sum(), data.rewards[7:].sum()]
    np.testing.assert_allclose(data.episode_returns(), expected, rtol=1e-6)
    assert [(s.start, s.stop) for s in data.episode_slices()] == [(0, 4), (4, 7), (7, 12)]
    assert (len(data), data.obs_dim, data.act_dim) == (12, 3, 2)


def test_episode_returns_by_hand():
    obs = np.arange(6, dtype=np.float32)[:, None]  # states 0..5 chain, one feature
    data = OfflineDataset.from_arrays(
        observations=obs[:5],
        actions=np.zeros((5, 1)),
        rewards=[1.0, 2.0, 3.0, 4.0, 5.0],
        terminals=[0, 1, 0, 0, 0],
        timeouts=[0, 0, 0, 1, 0],
        next_observations=obs[1:],
    )
    np.testing.assert_array_equal(data.episode_returns(), [3.0, 7.0, 5.0])


def test_episode_returns_split_where_the_state_chain_breaks():
    data = toy_dataset(lengths=(4, 3), ends=("none", "none"))  # no flag between episodes
    assert len(data.episode_returns()) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(rewards=d["rewards"][:-1]), "rows"),
        (lambda d: d["observations"].__setitem__((2, 1), np.nan), "NaN"),
        (lambda d: d.update(actions=d["actions"].astype(np.float64)), "float32"),
        (lambda d: d.update(terminals=d["terminals"].astype(np.float32)), "bool"),
        (lambda d: d.update(actions=d["actions"][:, 0]), "dimension"),
        (lambda d: d.update(next_observations=d["next_observations"][:, :2]), "features"),
    ],
)
def test_dataset_rejects_bad_arrays(change, message):
    arrays = {k: getattr(toy_dataset(), k).copy() for k in KEYS}
    change(arrays)
    with pytest.raises(ValueError, match=message):
        OfflineDataset(**arrays)


def test_minari_round_trip(tmp_path):
    data = toy_dataset(metadata={"behavior": "toy", "ref_min_score": -1.0, "seed": 3})
    save_minari(data, tmp_path / "toy")
    back = load_dataset(tmp_path / "toy")
    assert_same_transitions(data, back)
    assert back.env_id == "Hopper-v5"
    assert data.metadata.items() <= back.metadata.items()
    assert back.source == str(tmp_path / "toy")
    assert_same_transitions(data, load_dataset(tmp_path / "toy" / "data"))  # the data folder


def test_minari_layout_on_disk(tmp_path):
    data = toy_dataset(lengths=(4, 3, 5), ends=("terminal", "timeout", "none"))
    save_minari(data, tmp_path / "toy")
    meta = json.loads((tmp_path / "toy" / "data" / "metadata.json").read_text())
    assert meta["total_episodes"] == 3 and meta["total_steps"] == 12
    assert meta["data_format"] == "hdf5" and meta["dataset_id"] == "hopper-toy-v0"
    assert meta["minari_version"] == "0.5.0"  # an exact version Minari 0.5.x readers accept
    assert json.loads(meta["action_space"])["type"] == "Box"  # a JSON string, as Minari's
    with h5py.File(tmp_path / "toy" / "data" / "main_data.hdf5") as file:
        assert sorted(file.keys()) == ["episode_0", "episode_1", "episode_2"]
        ep = file["episode_1"]
        assert isinstance(ep, h5py.Group)
        assert ep["observations"].shape == (4, 3)  # type: ignore[union-attr]  # T + 1
        assert ep["actions"].shape == (3, 2)  # type: ignore[union-attr]
        assert ep["truncations"][-1] and not ep["terminations"][-1]  # type: ignore[index]
        assert ep.attrs["total_steps"] == 3


def test_minari_refuses_to_overwrite(tmp_path):
    save_minari(toy_dataset(), tmp_path / "toy")
    with pytest.raises(ValueError, match="overwrite"):
        save_minari(toy_dataset(), tmp_path / "toy")
    save_minari(toy_dataset(seed=1), tmp_path / "toy", overwrite=True)
    assert_same_transitions(load_dataset(tmp_path / "toy"), toy_dataset(seed=1))


def test_d4rl_round_trip(tmp_path):
    data = toy_dataset(metadata={"behavior": "toy", "nested": {"a": [1, 2]}})
    save_d4rl(data, tmp_path / "toy.hdf5")
    back = load_dataset(tmp_path / "toy.hdf5")
    assert_same_transitions(data, back)
    assert back.env_id == "Hopper-v5" and back.metadata == data.metadata


def qlearning_dataset_reference(arrays):
    """D4RL's qlearning_dataset (terminate_on_end=False), written as D4RL's loop."""
    out = {k: [] for k in ("observations", "actions", "rewards", "terminals", "next_observations")}
    for i in range(len(arrays["rewards"]) - 1):
        if arrays["timeouts"][i]:
            continue
        out["observations"].append(arrays["observations"][i])
        out["next_observations"].append(arrays["observations"][i + 1])
        out["actions"].append(arrays["actions"][i])
        out["rewards"].append(arrays["rewards"][i])
        out["terminals"].append(bool(arrays["terminals"][i]))
    return {k: np.array(v) for k, v in out.items()}


def test_d4rl_file_without_next_observations_follows_qlearning_dataset(tmp_path):
    data = toy_dataset(lengths=(4, 3, 5, 2), ends=("timeout", "terminal", "timeout", "timeout"))
    # D4RL layout: one row per step, the final state of a timeout episode is not stored.
    with h5py.File(tmp_path / "d4rl.hdf5", "w") as file:
        for key in KEYS[:-1]:
            file.create_dataset(key, data=getattr(data, key))
    back = load_d4rl(tmp_path / "d4rl.hdf5")
    ref = qlearning_dataset_reference({k: getattr(data, k) for k in KEYS})
    for key, value in ref.items():
        np.testing.assert_array_equal(getattr(back, key), value, err_msg=key)
    assert back.metadata["next_observations_derived"] is True
    # The rows before the dropped timeout rows end their episodes: 3 + 3 + 4 + 1 kept rows.
    np.testing.assert_array_equal(np.flatnonzero(back.episode_ends()), [2, 5, 9, 10])
    derived = derive_next_observations({k: getattr(data, k) for k in KEYS[:-1]})
    assert derived["timeouts"].sum() == 3 and derived["terminals"].sum() == 1


def test_truncated_hdf5_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "toy.hdf5"
    save_d4rl(toy_dataset(lengths=(400,), ends=("timeout",)), path)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(ValueError, match=r"toy\.hdf5.*truncated or corrupt"):
        load_dataset(path)


def test_truncated_minari_file_gives_a_clear_error(tmp_path):
    save_minari(toy_dataset(lengths=(400,), ends=("timeout",)), tmp_path / "toy")
    main = tmp_path / "toy" / "data" / "main_data.hdf5"
    main.write_bytes(main.read_bytes()[:3000])
    with pytest.raises(ValueError, match=r"main_data\.hdf5.*truncated or corrupt"):
        load_dataset(tmp_path / "toy")


def test_missing_keys_give_a_clear_error(tmp_path):
    path = tmp_path / "partial.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("observations", data=np.zeros((5, 3), np.float32))
        file.create_dataset("rewards", data=np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"partial\.h5.*missing \['actions', 'terminals'\]"):
        load_dataset(path)


def test_missing_episode_key_in_minari_gives_a_clear_error(tmp_path):
    save_minari(toy_dataset(), tmp_path / "toy")
    with h5py.File(tmp_path / "toy" / "data" / "main_data.hdf5", "a") as file:
        del file["episode_1/rewards"]
    with pytest.raises(ValueError, match=r"main_data\.hdf5: episode_1 lacks \['rewards'\]"):
        load_dataset(tmp_path / "toy")


def test_wrong_shapes_give_a_clear_error(tmp_path):
    path = tmp_path / "bad.hdf5"
    data = toy_dataset()
    with h5py.File(path, "w") as file:
        for key in KEYS:
            file.create_dataset(key, data=getattr(data, key))
        del file["actions"]
        file.create_dataset("actions", data=np.zeros((len(data) - 1, 2), np.float32))
    with pytest.raises(ValueError, match=r"bad\.hdf5: arrays must all have 12 rows"):
        load_dataset(path)


def test_unknown_paths_give_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such dataset"):
        load_dataset(tmp_path / "nothing.hdf5")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown dataset format"):
        load_dataset(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a Minari dataset folder"):
        load_dataset(tmp_path / "empty")


def test_load_dataset_env_id_argument(tmp_path):
    save_d4rl(toy_dataset(env_id=None), tmp_path / "toy.hdf5")
    assert load_dataset(tmp_path / "toy.hdf5", env_id="Walker2d-v5").env_id == "Walker2d-v5"
    save_d4rl(toy_dataset(), tmp_path / "hopper.hdf5")
    with pytest.raises(ValueError, match="collected on 'Hopper-v5'"):
        load_dataset(tmp_path / "hopper.hdf5", env_id="Walker2d-v5")


def test_concatenate_keeps_episodes_apart():
    a = toy_dataset(lengths=(3,), ends=("none",))
    b = toy_dataset(lengths=(2,), ends=("terminal",), seed=1)
    both = OfflineDataset.concatenate([a, b])
    assert len(both) == 5 and both.timeouts[2] and both.terminals[4]
    np.testing.assert_allclose(
        both.episode_returns(), [a.rewards.sum(), b.rewards.sum()], rtol=1e-6
    )

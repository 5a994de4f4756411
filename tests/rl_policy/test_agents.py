"""The three offline-RL agents as Lightning modules: which update moves which weights, acting,
observation normalisation, checkpoints and the registry."""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from onestep.core.testing import quiet_trainer, snapshot_params
from onestep.rl.agents import AGENT_KEY, AGENTS, DQL, FQL, OFQL, OfflineAgent, load_agent
from onestep.rl.agents.base import EXTRA_STATE_KEY

OBS, ACT, B = 5, 3, 32
TINY: dict[str, Any] = {"hidden": 16, "depth": 2, "time_dim": 4}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def make_agent(name: str, **kw) -> OfflineAgent:
    return AGENTS[name](OBS, ACT, **(TINY | kw))


def make_batch(seed: int = 0, b: int = B) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": 3.0 + 2.0 * torch.randn(b, OBS, generator=g),
        "action": torch.rand(b, ACT, generator=g) * 2 - 1,
        "reward": torch.randn(b, generator=g),
        "next_obs": 3.0 + 2.0 * torch.randn(b, OBS, generator=g),
        "done": (torch.rand(b, generator=g) < 0.2).float(),
    }


class Batches(Dataset):
    """The same dict batch ``n`` times (a DataLoader with ``batch_size=None`` yields it as is)."""

    def __init__(self, batch: dict[str, torch.Tensor], n: int = 1):
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batch


def fit(agent: OfflineAgent, iterations: int = 1, **trainer_kw) -> L.Trainer:
    """``iterations`` training steps on one fixed batch (two optimizer steps each)."""
    loader = DataLoader(Batches(make_batch(), iterations), batch_size=None)
    trainer = quiet_trainer(max_steps=2 * iterations, **trainer_kw)
    trainer.fit(agent, loader)
    return trainer


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def _under(keys: set[str], *prefixes: str) -> bool:
    return all(k.split(":", 1)[1].startswith(prefixes) for k in keys)


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_each_update_moves_only_its_own_networks(name):
    """Critic step: critics only; actor step: actor modules only; then exact soft updates."""
    agent = make_agent(name)
    snaps: dict[str, tuple[dict, dict]] = {}

    def record(method_name: str):
        original = getattr(agent, method_name)

        def wrapped(*args):
            before = snapshot_params(agent)
            out = original(*args)
            snaps[method_name] = (before, snapshot_params(agent))
            return out

        setattr(agent, method_name, wrapped)

    for method_name in ("critic_update", "actor_update", "update_targets"):
        record(method_name)
    trainer = fit(agent)

    before, after = snaps["critic_update"]
    moved = _changed(before, after)
    assert moved and _under(moved, "critic."), sorted(moved)
    assert {k for k in before if k.startswith("param:critic.")} == moved  # every critic weight

    before, after = snaps["actor_update"]
    moved = _changed(before, after)
    actor_prefixes = tuple(n + "." for n, m in agent.named_children() if m in agent.actor_modules())
    assert moved and _under(moved, *actor_prefixes), sorted(moved)
    for prefix in actor_prefixes:
        assert any(k.startswith("param:" + prefix) for k in moved), prefix

    before, after = snaps["update_targets"]
    moved = _changed(before, after)
    assert moved and _under(moved, "critic_target.", "actor_ema."), sorted(moved)
    tau = agent.hparams["tau"]
    for key, value in after.items():
        if key.startswith("param:critic_target."):
            critic = after[key.replace("critic_target.", "critic.")]
            expected = before[key] + tau * (critic - before[key])  # tau phi + (1 - tau) phi'
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-7)
        if key.startswith("param:actor_ema."):  # iteration 0 < ema_start: a copy
            assert torch.equal(value, after[key.replace("actor_ema.", "actor.")])

    assert agent.iteration == 1 and trainer.global_step == 2  # two optimizer steps per iteration


@pytest.mark.parametrize("name", ["ofql", "dql"])
def test_actor_ema_averages_after_ema_start(name):
    agent = make_agent(name, ema_start=0, ema_every=1, ema_decay=0.9)
    ema_before = copy.deepcopy(agent.actor_ema)
    original = agent.update_targets
    live: dict[str, torch.Tensor] = {}

    def wrapped():
        live.update({k: v.detach().clone() for k, v in agent.actor.named_parameters()})
        original()

    agent.update_targets = wrapped
    fit(agent)
    assert agent.actor_ema is not None and ema_before is not None
    for (k, new), old in zip(
        agent.actor_ema.named_parameters(), ema_before.parameters(), strict=True
    ):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * live[k], rtol=0, atol=1e-6)


def test_fql_has_no_ema_and_trains_flow_and_policy_with_one_optimizer():
    agent = make_agent("fql")
    assert isinstance(agent, FQL) and agent.actor_ema is None
    assert "ema_decay" not in agent.hparams and agent.hparams["alpha"] == 10.0
    names = {id(p) for p in agent.actor_parameters()}
    assert all(id(p) in names for p in agent.bc_flow.parameters())
    assert all(id(p) in names for p in agent.actor.parameters())


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_training_logs_the_losses(name):
    trainer = fit(make_agent(name))
    logged = set(trainer.callback_metrics)
    assert {"critic_loss", "actor_loss", "bc_loss", "q_loss", "q_mean"} <= logged
    assert all(torch.isfinite(v) for v in trainer.callback_metrics.values())


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_act_is_deterministic_given_a_seeded_generator(name):
    agent = make_agent(name)
    obs = make_batch()["obs"][:4]
    rng_state = torch.get_rng_state()
    a1 = agent.act(obs, torch.Generator().manual_seed(3))
    a2 = agent.act(obs, torch.Generator().manual_seed(3))
    a3 = agent.act(obs, torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), rng_state)  # the global RNG is left alone
    assert a1.shape == (4, ACT) and bool((a1.abs() <= 1).all())
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)
    assert agent.training and agent.actor.training  # act switches to eval mode and back
    modes: list[bool] = []
    hook = agent.actor.register_forward_pre_hook(lambda m, _: modes.append(m.training))
    agent.act(obs, torch.Generator().manual_seed(3))
    hook.remove()
    assert modes and not any(modes)  # the actor ran in eval mode
    assert agent.actor.training
    switched: list[bool] = []  # the critics are not walked (that cost ~0.9 ms per action)
    agent.critic.train = lambda mode=True: switched.append(mode)  # type: ignore[method-assign]
    agent.act(obs, torch.Generator().manual_seed(3))
    assert not switched
    bare = agent.act(obs, torch.Generator().manual_seed(3), num_candidates=1)
    assert torch.equal(bare, agent.act(obs, torch.Generator().manual_seed(3), num_candidates=1))


def test_dql_selects_among_fifty_candidates_by_default():
    agent = make_agent("dql")
    assert agent.hparams["num_candidates"] == 50
    obs = make_batch()["obs"][:2]
    calls = []
    agent.critic_target.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    agent.act(obs, torch.Generator().manual_seed(0))
    assert calls == [100]  # 2 states x 50 candidates scored by the target critics
    calls.clear()
    agent.act(obs, torch.Generator().manual_seed(0), num_candidates=1)
    assert calls == []


def test_candidate_selection_prefers_high_q():
    """With a critic that loves a_0 > 0, the softmax pick is (almost surely) such an action."""
    agent = make_agent("dql")
    agent.critic_target.forward = lambda s, a: (50.0 * a[:, 0], 50.0 * a[:, 0])  # type: ignore[method-assign]
    picked = agent.act(torch.zeros(64, OBS), torch.Generator().manual_seed(0), num_candidates=20)
    assert float((picked[:, 0] > 0).float().mean()) > 0.95


def test_observations_are_normalised_inside_the_agent():
    agent = make_agent("ofql")
    obs = make_batch()["obs"][:4]
    before = agent.act(obs, torch.Generator().manual_seed(0))
    agent.set_obs_normalizer(torch.full((OBS,), 3.0), torch.full((OBS,), 2.0))
    after = agent.act(obs, torch.Generator().manual_seed(0))
    assert not torch.equal(before, after)
    agent.set_obs_normalizer(torch.zeros(OBS), torch.ones(OBS))
    assert torch.equal(before, agent.act(obs, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="epsilon"):
        agent.set_obs_normalizer(torch.zeros(OBS), torch.zeros(OBS))
    with pytest.raises(ValueError, match=r"shape \[5\]"):
        agent.set_obs_normalizer(torch.zeros(OBS + 1), torch.ones(OBS + 1))


class StatsDataModule(L.LightningDataModule):
    def __init__(self):
        super().__init__()
        self.obs_mean = torch.full((OBS,), 3.0)
        self.obs_std = torch.full((OBS,), 2.0)

    def train_dataloader(self):
        return DataLoader(Batches(make_batch()), batch_size=None)


def test_fit_takes_the_observation_statistics_from_the_datamodule():
    agent = make_agent("fql")
    quiet_trainer(max_steps=2).fit(agent, datamodule=StatsDataModule())
    assert torch.equal(agent.obs_mean, torch.full((OBS,), 3.0))
    assert torch.equal(agent.obs_std, torch.full((OBS,), 2.0))


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_checkpoint_round_trip_through_load_agent(name, tmp_path):
    agent = make_agent(name, seed=3)
    agent.set_obs_normalizer(torch.full((OBS,), 3.0), torch.full((OBS,), 2.0))
    trainer = fit(agent, iterations=2)
    path = tmp_path / f"{name}.ckpt"
    trainer.save_checkpoint(path)
    assert torch.load(path, weights_only=True)[AGENT_KEY] == name

    loaded = load_agent(path)
    assert type(loaded) is type(agent) and not loaded.training
    assert dict(loaded.hparams) == dict(agent.hparams)
    assert loaded.iteration == 2
    state, loaded_state = agent.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    obs = make_batch(1)["obs"][:3]
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(agent.act(obs, g()), loaded.act(obs, g()))


def test_a_checkpoint_without_the_counter_in_its_state_dict_still_loads(tmp_path):
    """Checkpoints written before ``get_extra_state`` carry the counter only beside the weights."""
    trainer = fit(make_agent("ofql"), iterations=3)
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert int(checkpoint["state_dict"].pop(EXTRA_STATE_KEY)) == 3
    torch.save(checkpoint, path)
    assert load_agent(path).iteration == 3


def test_load_agent_refuses_what_is_not_an_agent_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_agent(tmp_path / "missing.ckpt")
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, other)
    with pytest.raises(ValueError, match="not an onestep-rl agent checkpoint"):
        load_agent(other)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        load_agent(junk)
    unknown = tmp_path / "unknown.ckpt"
    torch.save({AGENT_KEY: "sac"}, unknown)
    with pytest.raises(ValueError, match="'sac'"):
        load_agent(unknown)


def test_registry_names_match_the_classes():
    assert AGENTS == {"ofql": OFQL, "fql": FQL, "dql": DQL}
    assert all(cls.agent_name == name for name, cls in AGENTS.items())


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"target_q": "max"}, "target_q"),
        ({"tau": 0.0}, "tau"),
        ({"discount": 1.5}, "discount"),
        ({"num_candidates": 0}, "num_candidates"),
    ],
)
def test_bad_arguments_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        make_agent("ofql", **kw)


def test_bad_batches_are_refused():
    agent = make_agent("ofql")
    batch = make_batch()
    batch["reward"] = batch["reward"][:, None]
    with pytest.raises(ValueError, match="reward"):
        fit_batch(agent, batch)
    del batch["done"]
    with pytest.raises(KeyError, match="done"):
        fit_batch(agent, batch)


def fit_batch(agent: OfflineAgent, batch: dict[str, torch.Tensor]) -> None:
    quiet_trainer(max_steps=2).fit(agent, DataLoader(Batches(batch), batch_size=None))

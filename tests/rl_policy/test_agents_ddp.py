"""Data parallelism: two CPU processes (gloo DDP) train an agent exactly as one process does on
the same global batch, including the Q term's batch statistic ``mean|Q|``; only rank 0 rolls
the agent out in ``EvalCallback``."""

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from onestep.core.testing import cpu_ddp_spawn, quiet_trainer
from onestep.rl import callbacks
from onestep.rl.agents import DQL, FQL, OFQL
from onestep.rl.agents.base import _check_ddp
from onestep.rl.callbacks import EvalCallback, agent_act_fn
from onestep.rl.evaluation import EvalResult, evaluate_policy

# InvertedPendulum-v5's sizes, so the spawned run can evaluate in that environment.
OBS, ACT, B, NIT = 4, 1, 8, 3
ENV = "InvertedPendulum-v5"
TINY: dict[str, Any] = {"hidden": 16, "depth": 2, "time_dim": 4, "ema_start": 1, "ema_every": 1}


def _batches() -> list[dict[str, torch.Tensor]]:
    """``2 * NIT`` batches of ``B`` rows; every other one with higher rewards, so the two
    processes' halves of a global batch have different ``mean|Q|``."""
    g = torch.Generator().manual_seed(0)
    return [
        {
            "obs": torch.randn(B, OBS, generator=g),
            "action": torch.rand(B, ACT, generator=g) * 2 - 1,
            "reward": torch.randn(B, generator=g) + 5.0 * (k % 2),
            "next_obs": torch.randn(B, OBS, generator=g),
            "done": (torch.rand(B, generator=g) < 0.2).float(),
        }
        for k in range(2 * NIT)
    ]


def _fit(agent, devices: int, extra: list | None = None) -> tuple[dict[str, torch.Tensor], Any]:
    batches = _batches()
    if devices == 1:
        # Under DDP Lightning hands process r the items of a shuffled DistributedSampler
        # (seed 0); global row 2 j + r is process r's row j (GlobalBatchRNG draws its noise by
        # the same rule), so one process sees the two processes' batches interleaved.
        data: Any = batches
        order = [list(DistributedSampler(data, 2, r, shuffle=True, seed=0)) for r in range(2)]
        batches = [
            {
                k: torch.stack([batches[i][k], batches[j][k]], dim=1).flatten(0, 1)
                for k in batches[i]
            }
            for i, j in zip(*order, strict=True)
        ]
    strategy = cpu_ddp_spawn() if devices > 1 else "auto"
    trainer = quiet_trainer(
        devices=devices, strategy=strategy, max_steps=2 * NIT, callbacks=extra or []
    )
    trainer.fit(agent, DataLoader(batches, batch_size=None))  # type: ignore[arg-type]
    return {k: v.clone() for k, v in agent.state_dict().items()}, trainer


@pytest.mark.slow
def test_two_process_ddp_matches_one_process():
    """OFQL (Diffusion-QL's Q term, shared with DQL); FQL's scale goes through the same
    ``global_batch`` (checked below without processes: each spawned run costs ~35 s)."""
    single, _ = _fit(OFQL(OBS, ACT, **TINY), devices=1)
    agent = OFQL(OBS, ACT, **TINY)
    ddp, trainer = _fit(agent, devices=2, extra=[EvalCallback(ENV, at=[NIT], episodes=2)])
    fresh = OFQL(OBS, ACT, **TINY).state_dict()
    assert any(not torch.equal(fresh[k], single[k]) for k in single)  # training moved them
    # ddp_spawn's parent gets rank 0's state_dict only: the iteration counter must come with it.
    assert int(ddp["_extra_state"]) == int(single["_extra_state"]) == NIT
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-4, atol=1e-5, msg=key)
    # The evaluation at the last iteration (rank 0's rollout, broadcast) is what the final
    # weights score here, in one process.
    logged = float(trainer.callback_metrics["eval/return"])
    again = evaluate_policy(agent_act_fn(agent, 0), ENV, 2, 0).mean_return
    assert logged == pytest.approx(again)


def _result(mean: float) -> EvalResult:
    return EvalResult(ENV, 0, [mean], [1], mean, 0.0)


@pytest.mark.parametrize("rank", [0, 1])
def test_eval_callback_rolls_out_on_rank_zero_only(rank, monkeypatch):
    """Rank 0 evaluates and broadcasts; rank 1 never touches the environment and keeps (and
    logs) rank 0's result."""
    rolled: list[int] = []

    def fake_evaluate(*args, **kwargs) -> EvalResult:
        rolled.append(rank)
        return _result(7.0)

    monkeypatch.setattr(callbacks, "evaluate_policy", fake_evaluate)
    monkeypatch.setattr(callbacks, "agent_act_fn", lambda agent, seed: None)
    sent: list[Any] = []

    def broadcast(obj: Any, src: int = 0) -> EvalResult:
        assert src == 0
        sent.append(obj)
        return obj if rank == 0 else _result(7.0)  # what gloo hands rank 1

    trainer = SimpleNamespace(
        is_global_zero=rank == 0, world_size=2, strategy=SimpleNamespace(broadcast=broadcast)
    )
    logs: dict[str, float] = {}
    agent = SimpleNamespace(iteration=5, log=lambda k, v, **_: logs.__setitem__(k, v))
    cb = EvalCallback(ENV, at=[5])
    cb.on_train_batch_end(trainer, agent, None, None, 0)  # type: ignore[arg-type]
    assert rolled == ([0] if rank == 0 else [])
    assert sent == ([_result(7.0)] if rank == 0 else [None])
    assert cb.history == [(5, _result(7.0))] and logs == {"eval/return": 7.0}


def test_ddp_without_unused_parameter_detection_is_refused_with_the_fix():
    def trainer(world: int, find: bool | None):
        kwargs = {} if find is None else {"find_unused_parameters": find}
        return SimpleNamespace(world_size=world, strategy=SimpleNamespace(_ddp_kwargs=kwargs))

    for bad in (trainer(2, None), trainer(2, False)):
        with pytest.raises(ValueError, match="ddp_find_unused_parameters_true"):
            _check_ddp(bad)  # type: ignore[arg-type]
    _check_ddp(trainer(2, True))  # type: ignore[arg-type]
    _check_ddp(trainer(1, False))  # type: ignore[arg-type]
    _check_ddp(SimpleNamespace(world_size=1, strategy=SimpleNamespace()))  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [OFQL, DQL, FQL], ids=["ofql", "dql", "fql"])
def test_every_q_term_takes_its_scale_from_the_global_batch(cls, monkeypatch):
    """Doubling what ``global_batch`` returns halves the normalised Q term."""
    settings: dict[str, Any] = {k: TINY[k] for k in ("hidden", "depth", "time_dim")}
    if cls is FQL:
        settings["normalize_q_loss"] = True
    agent = cls(OBS, ACT, **settings)
    batch = _batches()[0]

    def q_loss() -> torch.Tensor:
        agent.rng.reseed(0)  # the same draws (noise, times, critic coin) in both calls
        return agent.actor_loss(batch)[1]["q_loss"]

    plain = q_loss()
    monkeypatch.setattr(agent, "global_batch", lambda x: 2.0 * x.detach())
    torch.testing.assert_close(q_loss(), 0.5 * plain)

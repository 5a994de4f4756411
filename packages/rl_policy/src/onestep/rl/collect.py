"""Collect D4RL-style offline datasets with random and SAC behaviour policies.

Behaviours, after D4RL (Fu et al. 2020, Sec. 5 "Gym-MuJoCo"):

* ``random``: uniform actions in ``[-1, 1]``.
* ``expert``: the trained SAC actor, ``tanh(mu(s))`` plus Gaussian noise (``expert_noise``).
* ``medium``: the SAC snapshot whose return is closest to ``random + medium_fraction * (trained
  - random)`` (D4RL stops training at about a third of expert performance), same noise.
* ``mixture``: the first half of the steps random, the second half expert.
* ``medium-expert``: half medium, half expert (D4RL's medium-expert).
* ``replay``: the first ``steps`` transitions of SAC's replay buffer, uniform warm-up included
  (D4RL's medium-replay, when ``train_steps`` stops SAC at medium level).

The dataset is a Minari folder (:func:`~onestep.rl.data.minari.save_minari`) whose metadata holds
the behaviour, the SAC settings and speed, and the measured mean returns of the random policy
and of the trained policy, also as Minari's ``ref_min_score`` / ``ref_max_score`` so evaluation
can normalise against this data's own references. The SAC run is cached beside the output (in
``<output>/../behavior_policies/``, keyed by env, train steps, seed and SAC settings), so a
second collection on the same env reuses it; the SAC actors that generated the data are also
saved in the dataset folder as ``behavior_policy_expert.pt`` / ``behavior_policy_medium.pt``
(:func:`~onestep.rl.behavior.policies.load_actor`).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from onestep.rl.behavior.cache import trained_run
from onestep.rl.behavior.policies import ActorPolicy, RandomPolicy, save_actor
from onestep.rl.behavior.rollout import rollout
from onestep.rl.behavior.sac import Actor, SACConfig, SACRun
from onestep.rl.data.dataset import OfflineDataset
from onestep.rl.data.minari import save_minari
from onestep.rl.data.spaces import describe_box
from onestep.rl.envs import make_env, task_name
from onestep.rl.evaluation import evaluate_policy

__all__ = ["BEHAVIORS", "collect", "collect_main", "pick_medium"]

BEHAVIORS = ("random", "medium", "expert", "mixture", "medium-expert", "replay")
_PARTS = {
    "random": ("random",),
    "medium": ("medium",),
    "expert": ("expert",),
    "mixture": ("random", "expert"),
    "medium-expert": ("medium", "expert"),
}
_SAC_ROLES = {b: tuple(r for r in _PARTS.get(b, ()) if r != "random") for b in BEHAVIORS}
_EVAL_SEED = 20_000  # evaluation episodes use seeds apart from the collection episodes


def pick_medium(run: SACRun, random_return: float, trained_return: float, fraction: float):
    """The snapshot whose return is closest to ``random + fraction * (trained - random)``."""
    target = random_return + fraction * (trained_return - random_return)
    return min(run.snapshots, key=lambda s: abs(s.mean_return - target))


def _env_description(env_id: str) -> dict[str, Any]:
    env = make_env(env_id)
    info: dict[str, Any] = {
        "observation_space": describe_box(env.observation_space),
        "action_space": describe_box(env.action_space),
    }
    if env.unwrapped.action_space != env.action_space:
        info["original_action_space"] = describe_box(env.unwrapped.action_space)
    try:
        if env.spec is not None:
            info["env_spec"] = env.spec.to_json()
    except (TypeError, ValueError):
        pass  # an unserialisable spec only costs Minari's recover_environment
    env.close()
    return info


def _actor_from(run: SACRun, state_dict: dict) -> Actor:
    a = run.actor
    actor = Actor(a.obs_dim, a.act_dim, a.hidden, a.layers)
    actor.load_state_dict(state_dict)
    return actor


def _gather(
    behavior: str,
    env_id: str,
    steps: int,
    seed: int,
    policies: dict[str, Any],
    run: SACRun | None,
) -> tuple[OfflineDataset, list[float]]:
    """The transitions of ``behavior`` and the returns of its complete episodes."""
    if behavior == "replay":
        assert run is not None
        if steps > len(run.replay):
            raise ValueError(
                f"--steps {steps} exceeds the {len(run.replay)} transitions of the SAC replay "
                "buffer; raise --train-steps or lower --steps"
            )
        data = run.replay.select(slice(0, steps))
        data.timeouts[-1] |= not data.terminals[-1]
        return data, [float(r) for r in data.episode_returns()[:-1]]
    parts = _PARTS[behavior]
    sizes = [steps // len(parts)] * len(parts)
    sizes[-1] += steps - sum(sizes)
    datasets, returns = [], []
    for k, (name, size) in enumerate(zip(parts, sizes, strict=True)):
        data, rets = rollout(env_id, policies[name], size, seed=seed + 100_000 * k)
        datasets.append(data)
        returns += rets
    return OfflineDataset.concatenate(datasets), returns


def collect(
    env_id: str,
    behavior: str,
    steps: int,
    output: str | Path,
    seed: int = 0,
    train_steps: int = 100_000,
    expert_noise: float = 0.1,
    eval_episodes: int = 10,
    medium_fraction: float = 1 / 3,
    sac_config: SACConfig | None = None,
    cache_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> OfflineDataset:
    """Collect ``steps`` transitions of ``behavior`` in ``env_id`` into a Minari folder.

    Args:
        env_id: gymnasium id (actions in ``[-1, 1]`` through :func:`~onestep.rl.envs.make_env`).
        behavior: one of :data:`BEHAVIORS`.
        steps: transitions to collect.
        output: dataset folder to create.
        seed: seeds SAC, the policies' noise and the episode resets.
        train_steps: SAC environment steps (not used by ``random``).
        expert_noise: std of the Gaussian noise added to SAC's deterministic action.
        eval_episodes: episodes to measure the random and the trained policy's mean returns.
        medium_fraction: where ``medium`` sits between random (0) and trained (1) return.
        sac_config: SAC hyperparameters.
        cache_dir: where SAC runs are cached; default ``<output>/../behavior_policies``.
        overwrite: replace an existing dataset at ``output``.
        progress: show SAC's progress bar.

    Returns:
        The collected dataset, with its metadata (as written).
    """
    if behavior not in BEHAVIORS:
        raise ValueError(f"behavior must be one of {BEHAVIORS}, got {behavior!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    output, start = Path(output), time.perf_counter()
    if (output / "data").exists() and not overwrite:
        raise ValueError(f"{output} already holds a dataset; pass --overwrite to replace it")
    meta: dict[str, Any] = {"behavior": behavior, "seed": seed, "steps": steps}
    meta.update(_env_description(env_id))
    act_dim = int(meta["action_space"]["shape"][0])
    random_policy = RandomPolicy(act_dim, seed)
    random_return = evaluate_policy(random_policy, env_id, eval_episodes, _EVAL_SEED + seed)
    meta["random_policy_return"] = meta["ref_min_score"] = random_return.mean_return
    meta["num_episodes_average_score"] = eval_episodes
    policies: dict[str, Any] = {"random": random_policy}
    run = None
    if behavior != "random":
        run, run_path, cached = trained_run(
            env_id,
            train_steps,
            seed,
            sac_config,
            cache_dir or output.parent / "behavior_policies",
            progress,
        )
        policies.update(_trained_policies(run, meta, expert_noise, medium_fraction, seed))
        meta.update(
            train_steps=train_steps,
            expert_noise=expert_noise,
            sac_config=asdict(run.config),
            sac_run=str(run_path),
            sac_run_from_cache=cached,
            sac_wall_s=round(run.wall_s, 1),
            sac_steps_per_s=round(run.steps_per_s, 1),
            sac_eval_returns={str(s.step): round(s.mean_return, 2) for s in run.snapshots},
        )
    data, returns = _gather(behavior, env_id, steps, seed, policies, run)
    meta["episodes"] = len(data.episode_slices())
    meta["complete_episodes"] = len(returns)
    meta["mean_episode_return"] = float(np.mean(returns)) if returns else None
    meta["dataset_id"] = f"{task_name(env_id)}-{behavior}-v0"
    meta["collected_with"] = f"onestep-rl {version('onestep-rl')}"
    meta["collect_wall_s"] = round(time.perf_counter() - start, 1)
    data = replace(data, env_id=env_id, metadata=meta, source=str(output))
    save_minari(data, output, overwrite=overwrite)
    for role in _SAC_ROLES[behavior]:
        path = output / f"behavior_policy_{role}.pt"
        save_actor(policies[role].actor, path, env_id=env_id, role=role, seed=seed)
    return data


def _trained_policies(
    run: SACRun, meta: dict[str, Any], noise: float, medium_fraction: float, seed: int
) -> dict[str, ActorPolicy]:
    """Expert and medium policies of ``run``; writes their measured returns into ``meta``."""
    env_id, episodes = run.env_id, meta["num_episodes_average_score"]
    expert = _actor_from(run, run.actor.state_dict())
    trained = evaluate_policy(ActorPolicy(expert), env_id, episodes, _EVAL_SEED + seed)
    meta["trained_policy_return"] = meta["ref_max_score"] = trained.mean_return
    snap = pick_medium(run, meta["random_policy_return"], trained.mean_return, medium_fraction)
    medium = _actor_from(run, snap.state_dict)
    meta["medium_policy_step"] = snap.step
    meta["medium_policy_return"] = evaluate_policy(
        ActorPolicy(medium), env_id, episodes, _EVAL_SEED + seed
    ).mean_return
    return {
        "expert": ActorPolicy(expert, noise, seed),
        "medium": ActorPolicy(medium, noise, seed + 1),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="onestep-rl collect",
        description="Collect an offline RL dataset (Minari folder) with a random or SAC policy.",
    )
    p.add_argument("--env", required=True, help="gymnasium id, e.g. Hopper-v5")
    p.add_argument("--behavior", required=True, choices=BEHAVIORS, help="behaviour policy")
    p.add_argument("--steps", type=int, required=True, help="transitions to collect")
    p.add_argument("--output", required=True, help="dataset folder to create")
    p.add_argument("--train-steps", type=int, default=100_000, help="SAC environment steps")
    p.add_argument("--seed", type=int, default=0, help="seed of SAC, noise and resets")
    p.add_argument("--expert-noise", type=float, default=0.1, help="Gaussian action noise std")
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per return estimate")
    p.add_argument("--medium-fraction", type=float, default=1 / 3, help="medium's return level")
    p.add_argument("--sac-hidden", type=int, default=256, help="SAC hidden units per layer")
    p.add_argument("--sac-batch-size", type=int, default=256, help="SAC batch size")
    p.add_argument("--sac-lr", type=float, default=3e-4, help="SAC learning rate")
    p.add_argument("--sac-start-steps", type=int, default=1000, help="SAC uniform warm-up steps")
    p.add_argument("--cache-dir", default=None, help="SAC run cache (default: beside --output)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.add_argument("--no-progress", action="store_true", help="hide the SAC progress bar")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (SAC's small MLPs: 1 is fastest)"
    )
    return p


def collect_main(argv: list[str]) -> int:
    """``onestep-rl collect``: parse ``argv``, collect, print a summary; 0 if it worked, else 2."""
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    config = SACConfig(
        hidden=args.sac_hidden,
        batch_size=args.sac_batch_size,
        lr=args.sac_lr,
        start_steps=args.sac_start_steps,
        update_after=args.sac_start_steps,
    )
    try:
        data = collect(
            args.env,
            args.behavior,
            args.steps,
            args.output,
            seed=args.seed,
            train_steps=args.train_steps,
            expert_noise=args.expert_noise,
            eval_episodes=args.eval_episodes,
            medium_fraction=args.medium_fraction,
            sac_config=config,
            cache_dir=args.cache_dir,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except ValueError as err:
        print(f"onestep-rl collect: {err}", file=sys.stderr)
        return 2
    print(_summary(data, args.output))
    return 0


def _summary(data: OfflineDataset, output: str) -> str:
    m = data.metadata
    mean = m["mean_episode_return"]
    lines = [
        f"wrote {output}: {data.env_id} {m['behavior']}, {len(data)} transitions, "
        f"{m['episodes']} episodes ({m['complete_episodes']} complete), mean return "
        + (f"{mean:.1f}" if mean is not None else "n/a (no complete episode)"),
        f"  random policy return {m['random_policy_return']:.1f}",
    ]
    if "trained_policy_return" in m:
        lines.append(
            f"  SAC {m['train_steps']} steps ({m['sac_steps_per_s']} steps/s"
            f"{', cached' if m['sac_run_from_cache'] else ''}): trained policy return "
            f"{m['trained_policy_return']:.1f}, medium (step {m['medium_policy_step']}) "
            f"{m['medium_policy_return']:.1f}"
        )
    return "\n".join(lines)

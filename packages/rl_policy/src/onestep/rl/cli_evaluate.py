"""``onestep-rl evaluate``: roll a trained agent out in its environment.

    onestep-rl evaluate --checkpoint runs/rl/ofql/last.ckpt --env Hopper-v5 --episodes 10
    onestep-rl evaluate ... --video-dir runs/rl/ofql/videos --output runs/rl/ofql/eval.json

Prints mean ± std return and the D4RL-normalised score (where reference returns exist, or from
the dataset's own references with ``--dataset``), writes a few episode videos when a renderer is
available (the reason is printed when not) and, with ``--output``, the whole result as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="onestep-rl evaluate", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--checkpoint", required=True, help="a .ckpt written while fitting an agent")
    p.add_argument("--env", required=True, help="gymnasium id, e.g. Hopper-v5")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="episode k is reset with seed + k")
    p.add_argument(
        "--video-dir", type=Path, default=None, help="write videos of a few episodes here"
    )
    p.add_argument("--video-episodes", type=int, default=2)
    p.add_argument(
        "--candidates",
        type=int,
        default=None,
        help="actions sampled per state, one drawn by softmax of Q (default: the agent's setting)",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="the training dataset (its behaviour policies' returns may serve as references)",
    )
    p.add_argument("--reference", choices=("auto", "d4rl", "dataset"), default="auto")
    p.add_argument("--output", type=Path, default=None, help="write the result as JSON here")
    return p


def main(argv: list[str]) -> int:
    """Run the verb; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.candidates is not None and args.candidates < 1:
        parser.error(f"--candidates must be >= 1, got {args.candidates}")
    from onestep.rl.agents import load_agent
    from onestep.rl.callbacks import agent_act_fn
    from onestep.rl.data import check_dataset_matches_env, load_dataset
    from onestep.rl.envs import make_env
    from onestep.rl.evaluation import evaluate_policy

    agent = load_agent(args.checkpoint)
    env = make_env(args.env)
    try:
        obs_dim, act_dim = env.observation_space.shape, env.action_space.shape
        metadata = None
        if args.dataset is not None:
            dataset = load_dataset(args.dataset)
            check_dataset_matches_env(dataset, env)
            metadata = dataset.metadata
    finally:
        env.close()
    want = (agent.hparams["obs_dim"],), (agent.hparams["act_dim"],)
    if (obs_dim, act_dim) != want:
        raise SystemExit(
            f"onestep-rl evaluate: checkpoint {args.checkpoint} was trained for observations "
            f"{want[0]} and actions {want[1]}, but {args.env} has {obs_dim} and {act_dim}"
        )
    result = evaluate_policy(
        agent_act_fn(agent, args.seed, args.candidates),
        args.env,
        args.episodes,
        seed=args.seed,
        video_dir=args.video_dir,
        video_episodes=args.video_episodes,
        dataset_metadata=metadata,
        reference=args.reference,
    )
    print(f"{agent.agent_name}: {result.summary()}")
    if result.videos:
        print("videos:", ", ".join(result.videos))
    elif args.video_dir is not None:
        print(f"no videos: {result.video_error}")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        record = {"agent": agent.agent_name, "checkpoint": str(args.checkpoint), **result.to_dict()}
        args.output.write_text(json.dumps(record, indent=2))
    return 0

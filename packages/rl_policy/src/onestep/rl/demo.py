"""``onestep-rl demo``: collect a dataset, train OFQL and Diffusion-QL on it, compare them.

    onestep-rl demo --output runs/demo-rl

1. trains a small SAC behaviour policy briefly on ``--env`` (cached under
   ``~/.cache/onestep-rl/behavior``) and collects a ``--behavior`` dataset with it (a Minari
   folder in ``DIR/data``);
2. trains OFQL (one-step average-velocity policy) and DQL (5-step diffusion policy) on the same
   data with the same seed for ``--iterations`` iterations each (checkpoints ``DIR/ofql.ckpt``,
   ``DIR/dql.ckpt``; reload with ``onestep-rl evaluate --checkpoint``);
3. evaluates both over the same ``--episodes`` seeded episodes at ``--eval-points`` iterations
   of the second half of training, pools those episodes (one checkpoint alone is a noisy
   score: :mod:`onestep.rl.scoring`), and times one action (batch 1) side by side;
4. writes ``DIR/results.json`` keyed by agent (``return``, ``latency``...) and a markdown
   table ``DIR/results.md``.

All on the CPU in minutes; ``--quick`` shrinks every budget to a smoke test.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

DEMO_AGENTS = ("ofql", "dql")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="onestep-rl demo", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--output", type=Path, default=Path("runs/demo-rl"))
    p.add_argument("--env", default="InvertedPendulum-v5")
    p.add_argument("--behavior", default="medium-expert")
    p.add_argument("--steps", type=int, default=20_000, help="transitions to collect")
    p.add_argument(
        "--train-steps", type=int, default=20_000, help="SAC steps for the behaviour policy"
    )
    p.add_argument("--iterations", type=int, default=3000, help="training iterations per agent")
    p.add_argument("--episodes", type=int, default=10, help="episodes per evaluation")
    p.add_argument(
        "--eval-points",
        type=int,
        default=3,
        help="evaluations pooled per agent, spread over the second half of training",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="tiny budgets (a smoke test)")
    p.add_argument("--no-progress", action="store_true")
    return p


QUICK = {"steps": 2000, "train_steps": 1500, "iterations": 100, "episodes": 2, "eval_points": 1}


def _dataset(args: argparse.Namespace, progress: bool) -> Path:
    """Collect the dataset once per settings (reused by a rerun into the same folder)."""
    from onestep.rl.behavior.cache import default_cache_dir
    from onestep.rl.behavior.sac import SMALL_SAC
    from onestep.rl.collect import collect

    name = f"{args.env}-{args.behavior}-{args.steps}-sac{args.train_steps}-s{args.seed}"
    path = args.output / "data" / name
    if not (path / "data").exists():
        collect(
            args.env,
            args.behavior,
            args.steps,
            path,
            seed=args.seed,
            train_steps=args.train_steps,
            sac_config=SMALL_SAC,
            cache_dir=default_cache_dir(),
            progress=progress,
        )
    return path


def _table(results: dict[str, Any]) -> str:
    lines = [
        "| agent | return (mean ± std, pooled) | normalised | return at each evaluated "
        "iteration | action latency ms (batch 1) | train s |",
        "|---|---|---|---|---|---|",
    ]
    for name in DEMO_AGENTS:
        r = results[name]
        norm = "n/a" if r["normalized"] is None else f"{r['normalized']:.1f}"
        points = ", ".join(f"{it}: {ret:.1f}" for it, ret in r["returns_by_iteration"].items())
        lines.append(
            f"| {name} | {r['return']:.1f} ± {r['return_std']:.1f} | {norm} | {points} | "
            f"{r['latency'] * 1e3:.3f} | {r['train_s']:.0f} |"
        )
    lines.append("")
    lines.append(
        f"Action latency DQL ÷ OFQL: **{results['latency_ratio']:.1f}×** (DQL samples "
        f"{results['dql']['candidates']} candidates through its {results['dql_steps']}-step chain "
        f"and picks one by Q, as in its paper; its bare chain: "
        f"{results['latency_ratio_chain']:.1f}×)."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    from onestep.rl.scoring import late_iterations

    try:  # refuse a bad schedule before minutes of collection and training
        late_iterations(args.iterations, args.eval_points)
    except ValueError as err:
        raise SystemExit(
            f"onestep-rl demo: {err}; lower --eval-points or raise --iterations"
        ) from None
    import torch

    from onestep.core.bench.timing import interleaved_medians
    from onestep.rl.data import OfflineDataModule
    from onestep.rl.scoring import fit_and_score
    from onestep.rl.training import build_agent

    if args.threads:
        torch.set_num_threads(args.threads)
    start, progress = time.perf_counter(), not args.no_progress
    args.output.mkdir(parents=True, exist_ok=True)
    data_path = _dataset(args, progress)
    results: dict[str, Any] = {}
    agents = {}
    for name in DEMO_AGENTS:
        dm = OfflineDataModule(str(data_path), seed=args.seed)
        dm.setup("fit")
        agent = build_agent(name, dm.obs_dim, dm.act_dim, seed=args.seed)
        scored = fit_and_score(
            agent,
            dm,
            args.iterations,
            args.env,
            args.episodes,
            seed=args.seed,
            points=args.eval_points,
            checkpoint=args.output / f"{name}.ckpt",
            dataset_metadata=dm.dataset.metadata,
            progress=progress,
        )
        ev = scored.result
        points = ", ".join(f"{it}: {ret:.1f}" for it, ret in scored.by_iteration.items())
        print(f"{name}: {ev.summary()} (pooled; by iteration {points})")
        agents[name] = agent
        results[name] = {
            "return": ev.mean_return,
            "return_std": ev.std_return,
            "normalized": ev.normalized_mean,
            "reference": ev.reference,
            "returns": ev.returns,
            "returns_by_iteration": scored.by_iteration,
            "train_s": scored.fit.wall_s,
            "iterations": args.iterations,
            "candidates": agent.hparams["num_candidates"],
            "checkpoint": str(scored.fit.checkpoint),
        }
    obs = torch.zeros(1, agents["ofql"].hparams["obs_dim"])
    g = torch.Generator().manual_seed(0)
    ms = interleaved_medians(
        {
            "ofql": lambda: agents["ofql"].act(obs, generator=g),
            "dql": lambda: agents["dql"].act(obs, generator=g),
            "dql_chain": lambda: agents["dql"].act(obs, generator=g, num_candidates=1),
        },
        repeats=20,
        inner=10,
    )
    for name in DEMO_AGENTS:
        results[name]["latency"] = ms[name] / 1e3
    results["dql"]["latency_chain"] = ms["dql_chain"] / 1e3
    results["latency_ratio"] = ms["dql"] / ms["ofql"]
    results["latency_ratio_chain"] = ms["dql_chain"] / ms["ofql"]
    results["dql_steps"] = agents["dql"].hparams["n_timesteps"]
    results["dataset"] = {"path": str(data_path), "env": args.env, "behavior": args.behavior}
    results["wall_s"] = time.perf_counter() - start
    (args.output / "results.json").write_text(json.dumps(results, indent=2))
    table = _table(results)
    (args.output / "results.md").write_text(f"# onestep-rl demo on {args.env}\n\n{table}\n")
    print(f"\n{table}\n\nwrote {args.output / 'results.json'} ({results['wall_s']:.0f} s)")
    return 0

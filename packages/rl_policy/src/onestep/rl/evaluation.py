"""Roll a policy out in its environment: returns, D4RL-normalised scores and a few videos.

Protocol (as in D4RL / IQL / FQL evaluations): ``episodes`` full episodes of the environment's
own time limit (or ``max_episode_steps``), episode ``k`` reset with seed ``seed + k`` so a
result is reproducible and two policies meet the same start states. The policy sees raw
observations ``[1, obs_dim]`` float32 and returns actions in ``[-1, 1]``
(:func:`~onestep.rl.envs.make_env` maps them onto the environment's bounds); actions are clipped
to ``[-1, 1]`` before the step, as every evaluation loop of those papers does, and a non-finite
action is an error.

Videos: the first ``video_episodes`` episodes are rendered with ``render_mode="rgb_array"``. MuJoCo
needs an OpenGL backend: ``MUJOCO_GL`` when set, else EGL and then OSMesa are probed in a
subprocess (PyOpenGL fixes its platform at first import, so a failed backend cannot be retried
in-process). Frames go to MP4 through PyAV or imageio when installed, else to GIF through Pillow.
When nothing can render or write, :attr:`EvalResult.video_error` says why and evaluation goes on.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onestep.rl.envs import make_env, score_reference

__all__ = ["EvalResult", "evaluate_policy", "pool_results", "write_video"]

ActFn = Callable[[np.ndarray], np.ndarray]

_VIDEO_SIZE = 256  # MuJoCo frame width and height: small, fast to render in software


@dataclass
class EvalResult:
    """Outcome of :func:`evaluate_policy`.

    Attributes:
        env_id: the environment.
        seed: episode ``k`` was reset with ``seed + k``.
        returns: undiscounted return per episode.
        lengths: steps per episode.
        mean_return / std_return: over episodes (population std).
        normalized_mean / normalized_std: D4RL-normalised (0 = random, 100 = expert), or None.
        reference: which reference returns were used (``Reference.describe()``), or None.
        normalized_error: why there is no normalised score, or None.
        videos: paths of the written videos.
        video_error: why some or all videos are missing, or None.
        wall_s: seconds spent.
    """

    env_id: str
    seed: int
    returns: list[float]
    lengths: list[int]
    mean_return: float
    std_return: float
    normalized_mean: float | None = None
    normalized_std: float | None = None
    reference: str | None = None
    normalized_error: str | None = None
    videos: list[str] = field(default_factory=list)
    video_error: str | None = None
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    def summary(self) -> str:
        """One line: ``Hopper-v5: return 1234.5 ± 67.8 over 10 episodes, normalised 38.6 ± 2.1``."""
        line = (
            f"{self.env_id}: return {self.mean_return:.1f} ± {self.std_return:.1f} over "
            f"{len(self.returns)} episodes"
        )
        if self.normalized_mean is not None:
            line += f", normalised {self.normalized_mean:.1f} ± {self.normalized_std:.1f}"
            line += f" ({self.reference})"
        else:
            line += f", no normalised score ({self.normalized_error})"
        return line


def _probe_backend(backend: str) -> str | None:
    """None when MuJoCo can make an offscreen context with ``backend``, else the error."""
    code = (
        f"from mujoco.{backend} import GLContext\n"
        "c = GLContext(16, 16)\nc.make_current()\nc.free()\n"
    )
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1]


@functools.cache
def _select_mujoco_gl() -> str | None:
    """Set ``MUJOCO_GL`` to a working backend; None on success, else the reason."""
    if os.environ.get("MUJOCO_GL"):
        return None
    errors = []
    for backend in ("egl", "osmesa"):
        error = _probe_backend(backend)
        if error is None:
            if "OpenGL" in sys.modules and os.environ.get("PYOPENGL_PLATFORM") != backend:
                return f"PyOpenGL was already imported with another platform than {backend}"
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return None
        errors.append(f"{backend}: {error}")
    return "no MuJoCo OpenGL backend works (" + "; ".join(errors) + ")"


def write_video(frames: list[np.ndarray], path: Path, fps: int) -> Path:
    """Write ``[H, W, 3]`` uint8 frames as MP4 (PyAV, imageio) or, failing that, GIF (Pillow).

    Returns:
        The written path (``.mp4`` or ``.gif`` suffix).

    Raises:
        RuntimeError: no writer is installed or all failed; the message lists why.
    """
    errors = []
    try:
        import imageio.v3 as iio

        mp4 = path.with_suffix(".mp4")
        iio.imwrite(mp4, np.stack(frames), fps=fps, codec="libx264", plugin="pyav")
        return mp4
    except Exception as err:
        errors.append(f"mp4 (imageio + pyav): {err}")
    try:
        from PIL import Image

        gif = path.with_suffix(".gif")
        images = [Image.fromarray(f) for f in frames]
        images[0].save(gif, save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
        return gif
    except Exception as err:
        errors.append(f"gif (Pillow): {err}")
    raise RuntimeError("no video writer worked: " + "; ".join(errors))


def _run_episode(
    act_fn: ActFn, env: Any, seed: int, max_steps: int | None, frames: list | None
) -> tuple[float, int]:
    obs, _ = env.reset(seed=seed)
    total, steps, done = 0.0, 0, False
    while not done and (max_steps is None or steps < max_steps):
        action = np.asarray(act_fn(obs[None].astype(np.float32)), dtype=np.float64)
        action = action.reshape(env.action_space.shape)
        if not np.isfinite(action).all():
            raise ValueError(f"the policy returned a non-finite action {action} at step {steps}")
        obs, reward, terminated, truncated, _ = env.step(np.clip(action, -1.0, 1.0))
        total, steps, done = total + float(reward), steps + 1, terminated or truncated
        if frames is not None:
            frames.append(env.render())
    return total, steps


def _make_render_env(env_id: str, max_episode_steps: int | None) -> tuple[Any, str | None]:
    """An rgb_array env or ``(None, reason)``."""
    kwargs: dict[str, Any] = {"max_episode_steps": max_episode_steps}
    is_mujoco = "mujoco" in str(getattr(_spec(env_id), "entry_point", ""))
    if is_mujoco:
        reason = _select_mujoco_gl()
        if reason is not None:
            return None, reason
        kwargs.update(width=_VIDEO_SIZE, height=_VIDEO_SIZE)
    try:
        env = make_env(env_id, render=True, **kwargs)
        env.reset(seed=0)
        env.render()
    except Exception as err:
        return None, f"cannot render {env_id}: {type(err).__name__}: {err}"
    return env, None


def _spec(env_id: str) -> Any:
    import gymnasium as gym

    try:
        return gym.spec(env_id)
    except gym.error.Error:
        return None


def _record_videos(
    act_fn: ActFn,
    env_id: str,
    seeds: list[int],
    video_dir: Path,
    max_episode_steps: int | None,
) -> tuple[list[str], str | None]:
    env, reason = _make_render_env(env_id, max_episode_steps)
    if env is None:
        return [], reason
    fps = int(env.metadata.get("render_fps", 30))
    paths: list[str] = []
    try:
        video_dir.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            frames: list[np.ndarray] = []
            _run_episode(act_fn, env, seed, max_episode_steps, frames)
            name = f"{env_id.replace('/', '_')}_seed{seed}"
            paths.append(str(write_video(frames, video_dir / name, fps)))
    except Exception as err:
        return paths, f"video recording failed: {type(err).__name__}: {err}"
    finally:
        env.close()
    return paths, None


def _scored(
    env_id: str,
    seed: int,
    returns: list[float],
    lengths: list[int],
    dataset_metadata: dict[str, Any] | None,
    reference: str,
) -> EvalResult:
    """An :class:`EvalResult` for these episode returns, normalised where references exist."""
    values = np.asarray(returns, dtype=np.float64)
    result = EvalResult(
        env_id=env_id,
        seed=seed,
        returns=values.tolist(),
        lengths=list(lengths),
        mean_return=float(values.mean()),
        std_return=float(values.std()),
    )
    ref = score_reference(env_id, dataset_metadata, reference)
    if ref is None:
        result.normalized_error = (
            f"no reference returns for {env_id} (reference={reference!r}; D4RL has hopper, "
            "halfcheetah, walker2d, ant; dataset metadata may give ref_min_score / ref_max_score)"
        )
    else:
        normalized = ref.normalize(values)
        result.normalized_mean = float(normalized.mean())
        result.normalized_std = float(normalized.std())
        result.reference = ref.describe()
    return result


def pool_results(
    results: list[EvalResult],
    dataset_metadata: dict[str, Any] | None = None,
    reference: str = "auto",
) -> EvalResult:
    """One result over the episodes of several evaluations of the same environment.

    Scoring an agent by its evaluations at a few late training iterations, pooled, measures the
    policy the run converges to rather than one lucky or unlucky checkpoint (single checkpoints
    of the same run differed by 2x on InvertedPendulum; see BENCHMARKS.md). Mean and std are
    over all pooled episodes; ``seed`` and ``wall_s`` are the first result's and the sum.

    Args:
        results: evaluations of one environment (at least one).
        dataset_metadata: as for :func:`evaluate_policy`.
        reference: as for :func:`evaluate_policy`.
    """
    if not results:
        raise ValueError("pool_results needs at least one evaluation")
    envs = {r.env_id for r in results}
    if len(envs) > 1:
        raise ValueError(f"cannot pool evaluations of different environments: {sorted(envs)}")
    returns = [x for r in results for x in r.returns]
    lengths = [n for r in results for n in r.lengths]
    pooled = _scored(
        results[0].env_id, results[0].seed, returns, lengths, dataset_metadata, reference
    )
    pooled.wall_s = sum(r.wall_s for r in results)
    return pooled


def evaluate_policy(
    act_fn: ActFn,
    env_id: str,
    episodes: int,
    seed: int = 0,
    video_dir: str | Path | None = None,
    video_episodes: int = 2,
    max_episode_steps: int | None = None,
    dataset_metadata: dict[str, Any] | None = None,
    reference: str = "auto",
) -> EvalResult:
    """Run ``episodes`` episodes of ``act_fn`` in ``env_id`` and score them.

    Args:
        act_fn: ``obs [1, obs_dim] float32 -> actions [1, act_dim]`` (or ``[act_dim]``) in
            ``[-1, 1]``.
        env_id: gymnasium id.
        episodes: number of episodes (>= 1).
        seed: episode ``k`` is reset with ``seed + k``.
        video_dir: when set, the first ``video_episodes`` episodes (same seeds, so the same
            returns) are rendered again and written there.
        video_episodes: how many episodes to film.
        max_episode_steps: override the environment's time limit.
        dataset_metadata: metadata of the training data, whose ``ref_min_score`` /
            ``ref_max_score`` may serve as references
            (see :func:`~onestep.rl.envs.score_reference`).
        reference: ``"auto"``, ``"d4rl"`` or ``"dataset"``.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    start = time.perf_counter()
    env = make_env(env_id, max_episode_steps=max_episode_steps)
    try:
        runs = [_run_episode(act_fn, env, seed + k, None, None) for k in range(episodes)]
    finally:
        env.close()
    result = _scored(
        env_id, seed, [r for r, _ in runs], [n for _, n in runs], dataset_metadata, reference
    )
    if video_dir is not None and video_episodes > 0:
        seeds = [seed + k for k in range(min(video_episodes, episodes))]
        result.videos, result.video_error = _record_videos(
            act_fn, env_id, seeds, Path(video_dir), max_episode_steps
        )
    result.wall_s = time.perf_counter() - start
    return result

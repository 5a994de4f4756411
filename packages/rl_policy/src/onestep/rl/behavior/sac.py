"""A compact Soft Actor-Critic to train behaviour policies on CPU (Haarnoja et al. 2018).

SAC with twin Q critics, target critics updated by Polyak averaging, a tanh-squashed Gaussian
actor and automatic entropy tuning towards ``-act_dim`` (Haarnoja et al. 2018b, "SAC Algorithms
and Applications", Alg. 1). D4RL's behaviour policies were SAC policies too (Fu et al. 2020):
``expert`` = the trained policy, ``medium`` = one stopped at about a third of expert performance,
``medium-replay`` = its replay buffer. Losses are pure per-sample functions; the trainer calls the
networks. Actions are in ``[-1, 1]`` (:func:`~onestep.rl.envs.make_env`).

``train_sac`` evaluates the deterministic policy every ``eval_every`` steps and keeps a copy of
the actor there (``snapshots``), so a "medium" policy can be picked afterwards by its return.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from onestep.rl.data.dataset import OfflineDataset
from onestep.rl.envs import env_dims, make_env
from onestep.rl.evaluation import evaluate_policy

__all__ = [
    "SMALL_SAC",
    "Actor",
    "ReplayBuffer",
    "SACConfig",
    "SACRun",
    "Snapshot",
    "TwinCritic",
    "actor_loss",
    "alpha_loss",
    "critic_loss",
    "mlp",
    "train_sac",
]

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass
class SACConfig:
    """SAC hyperparameters (defaults: Haarnoja et al. 2018b, Table 1, except the warm-up).

    Attributes:
        hidden: units per hidden layer.
        layers: hidden layers in actor and critics.
        lr: Adam learning rate of actor, critics and temperature.
        batch_size: transitions per update.
        gamma: discount.
        tau: Polyak rate of the target critics.
        start_steps: steps of uniformly random actions before the actor acts (exploration).
        update_after: steps collected before the first update.
        updates_per_step: gradient updates per environment step.
        init_alpha: initial entropy temperature.
    """

    hidden: int = 256
    layers: int = 2
    lr: float = 3e-4
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    start_steps: int = 1000
    update_after: int = 1000
    updates_per_step: int = 1
    init_alpha: float = 1.0


SMALL_SAC = SACConfig(hidden=64, layers=2, batch_size=64, lr=1e-3)
"""A small, fast SAC for low-dimensional tasks (the demo and the bench's InvertedPendulum data).

Measured on InvertedPendulum-v5 (CPU, the snapshots' deterministic returns, 5 episodes every
1,000 steps): on seeds 0, 1 and 2 it wanders between 50 and 250 (one-off 1000s) for the first
13,000-17,000 steps and then holds the maximum, 1000, from step 18,000, 18,000 and 15,000 to
20,000 (53-77 s each). Stopped at 5,000 steps, its final actor returned 53-190 on seeds 0-4,
so an "expert" needs the 20,000. The default config climbs slowly, 74 at 2,000 steps and
85-113 from 3,000 to 10,000 (seed 0, 245 s): its temperature starts at 1 and falls at
``lr = 3e-4``, against a reward of 1 per step.
"""


def mlp(inp: int, out: int, hidden: int, layers: int) -> nn.Sequential:
    """``layers`` hidden ReLU layers of ``hidden`` units, then a linear output."""
    dims = [inp] + [hidden] * layers
    mods: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        mods += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*mods, nn.Linear(dims[-1], out))


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy ``a = tanh(mu + sigma * eps)``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.obs_dim, self.act_dim, self.hidden, self.layers = obs_dim, act_dim, hidden, layers
        self.net = mlp(obs_dim, 2 * act_dim, hidden, layers)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, log_std)``, each ``[B, act_dim]``."""
        mu, log_std = self.net(obs).chunk(2, dim=-1)
        return mu, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Reparameterised ``(action [B, act_dim], log_prob [B])``.

        ``log pi(a) = log N(u) - sum log(1 - tanh(u)^2)``, the Jacobian term written as
        ``2 (log 2 - u - softplus(-2u))`` for stability (Haarnoja et al. 2018, App. C).
        """
        mu, log_std = self(obs)
        u = mu + log_std.exp() * torch.randn_like(mu)
        log_prob = -0.5 * ((u - mu) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        log_prob = log_prob - 2 * (math.log(2) - u - F.softplus(-2 * u))
        return torch.tanh(u), log_prob.sum(-1)

    def mean_action(self, obs: Tensor) -> Tensor:
        """Deterministic action ``tanh(mu)``, ``[B, act_dim]``."""
        return torch.tanh(self(obs)[0])


class TwinCritic(nn.Module):
    """Two independent Q networks ``Q_1, Q_2 : (s, a) -> R`` (clipped double Q)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.q1 = mlp(obs_dim + act_dim, 1, hidden, layers)
        self.q2 = mlp(obs_dim + act_dim, 1, hidden, layers)

    def forward(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """``(Q_1, Q_2)``, each ``[B]``."""
        x = torch.cat([obs, action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


def critic_loss(q1: Tensor, q2: Tensor, target: Tensor) -> Tensor:
    """Soft Bellman residual of both critics (Haarnoja et al. 2018, eq. 5), ``[B]``.

    ``target = r + gamma (1 - done) (min Q_targ(s', a') - alpha log pi(a'|s'))``, no grad.
    """
    return (q1 - target) ** 2 + (q2 - target) ** 2


def actor_loss(log_prob: Tensor, q: Tensor, alpha: Tensor | float) -> Tensor:
    """Policy objective ``alpha log pi(a|s) - min_i Q_i(s, a)`` (eq. 7, reparameterised); ``[B]``.

    ``q`` is the minimum of the two critics at the sampled action (clipped double Q).
    """
    return alpha * log_prob - q


def alpha_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: float) -> Tensor:
    """Temperature objective ``-log alpha (log pi + H_target)`` (2018b, eq. 18), ``[B]``."""
    return -log_alpha * (log_prob.detach() + target_entropy)


class ReplayBuffer:
    """Fixed-size FIFO of transitions in preallocated numpy arrays; samples uniformly."""

    def __init__(self, obs_dim: int, act_dim: int, capacity: int):
        self.capacity, self.size, self.ptr = capacity, 0, 0
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.zeros((capacity, act_dim), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.terminal = np.zeros(capacity, bool)
        self.timeout = np.zeros(capacity, bool)

    def add(self, obs, action, reward, next_obs, terminal: bool, timeout: bool) -> None:
        """Store one transition (overwrites the oldest when full)."""
        i = self.ptr
        self.obs[i], self.action[i], self.reward[i], self.next_obs[i] = (
            obs,
            action,
            reward,
            next_obs,
        )
        self.terminal[i], self.timeout[i] = terminal, timeout
        self.ptr, self.size = (i + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, Tensor]:
        """Uniform batch: ``obs``, ``action``, ``reward``, ``next_obs``, ``done`` (terminals)."""
        i = rng.integers(0, self.size, batch_size)
        return {
            "obs": torch.from_numpy(self.obs[i]),
            "action": torch.from_numpy(self.action[i]),
            "reward": torch.from_numpy(self.reward[i]),
            "next_obs": torch.from_numpy(self.next_obs[i]),
            "done": torch.from_numpy(self.terminal[i].astype(np.float32)),
        }

    def to_dataset(self, env_id: str | None = None) -> OfflineDataset:
        """The stored transitions in collection order (needs ``size <= capacity``: no wrap)."""
        if self.size == self.capacity and self.ptr != 0:
            raise ValueError("the replay buffer wrapped around; collection order is lost")
        n = self.size
        return OfflineDataset(
            self.obs[:n].copy(),
            self.action[:n].copy(),
            self.reward[:n].copy(),
            self.terminal[:n].copy(),
            self.timeout[:n].copy(),
            self.next_obs[:n].copy(),
            env_id=env_id,
        )


@dataclass
class Snapshot:
    """The actor at one point of training and its deterministic evaluation return."""

    step: int
    mean_return: float
    state_dict: dict[str, Tensor]


@dataclass
class SACRun:
    """Result of :func:`train_sac`."""

    env_id: str
    steps: int
    seed: int
    config: SACConfig
    actor: Actor
    replay: OfflineDataset
    snapshots: list[Snapshot] = field(default_factory=list)
    train_returns: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    eval_s: float = 0.0

    @property
    def steps_per_s(self) -> float:
        """Environment steps (with their updates) per second, evaluation time excluded."""
        train_s = self.wall_s - self.eval_s
        return self.steps / train_s if train_s > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts: steps, speed, config and evaluation returns per snapshot."""
        return {
            "env_id": self.env_id,
            "train_steps": self.steps,
            "seed": self.seed,
            "wall_s": round(self.wall_s, 2),
            "eval_s": round(self.eval_s, 2),
            "steps_per_s": round(self.steps_per_s, 1),
            "sac_config": asdict(self.config),
            "eval_returns": {s.step: round(s.mean_return, 2) for s in self.snapshots},
        }


class SAC:
    """Networks, optimisers and the update step of SAC."""

    def __init__(self, obs_dim: int, act_dim: int, config: SACConfig):
        c = self.config = config
        self.actor = Actor(obs_dim, act_dim, c.hidden, c.layers)
        self.critic = TwinCritic(obs_dim, act_dim, c.hidden, c.layers)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(c.init_alpha), requires_grad=True)
        self.target_entropy = -float(act_dim)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.lr, fused=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.lr, fused=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=c.lr, fused=True)

    def update(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """One gradient step on critics, actor and temperature; Polyak update of targets."""
        c, alpha = self.config, self.log_alpha.exp().detach()
        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(batch["next_obs"])
            q_next = torch.minimum(*self.critic_target(batch["next_obs"], next_action))
            soft_v = q_next - alpha * next_log_prob
            target = batch["reward"] + c.gamma * (1.0 - batch["done"]) * soft_v  # (B,)
        q1, q2 = self.critic(batch["obs"], batch["action"])
        loss_q = critic_loss(q1, q2, target).mean()
        self.critic_opt.zero_grad(set_to_none=True)
        loss_q.backward()
        self.critic_opt.step()

        action, log_prob = self.actor.sample(batch["obs"])
        self.critic.requires_grad_(False)  # the actor step must not leave grads on the critic
        q = torch.minimum(*self.critic(batch["obs"], action))
        self.critic.requires_grad_(True)
        loss_pi = actor_loss(log_prob, q, alpha).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        loss_pi.backward()
        self.actor_opt.step()

        loss_alpha = alpha_loss(self.log_alpha, log_prob, self.target_entropy).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        loss_alpha.backward()
        self.alpha_opt.step()

        with torch.no_grad():
            online = [p.data for p in self.critic.parameters()]
            target_params = [p.data for p in self.critic_target.parameters()]
            torch._foreach_lerp_(target_params, online, c.tau)  # target += tau (online - target)
        return {"loss/critic": loss_q.item(), "loss/actor": loss_pi.item(), "alpha": alpha.item()}

    def act(self, obs: np.ndarray, explore: bool) -> np.ndarray:
        """Action for one observation ``[obs_dim]``: sampled (``explore``) or ``tanh(mu)``."""
        with torch.no_grad():
            o = torch.as_tensor(obs, dtype=torch.float32)[None]
            a = self.actor.sample(o)[0] if explore else self.actor.mean_action(o)
        return a[0].numpy()


def _deterministic(actor: Actor):
    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return actor.mean_action(torch.as_tensor(obs, dtype=torch.float32)).numpy()

    return act


def _snapshot(agent: SAC, env_id: str, step: int, episodes: int, seed: int) -> Snapshot:
    result = evaluate_policy(_deterministic(agent.actor), env_id, episodes, seed=seed)
    state = {k: v.detach().clone() for k, v in agent.actor.state_dict().items()}
    return Snapshot(step, result.mean_return, state)


def train_sac(
    env_id: str,
    steps: int,
    seed: int = 0,
    config: SACConfig | None = None,
    eval_every: int | None = None,
    eval_episodes: int = 5,
    progress: bool = True,
) -> SACRun:
    """Train SAC online in ``env_id`` for ``steps`` environment steps on CPU.

    Args:
        env_id: gymnasium id (actions rescaled to ``[-1, 1]`` by ``make_env``).
        steps: environment steps.
        seed: seeds torch, the exploration noise, the environment and the batch sampling.
        config: hyperparameters.
        eval_every: evaluate (and keep a snapshot of) the deterministic actor every this many
            steps; ``None``: ten times over the run. The final actor is always evaluated.
        eval_episodes: episodes per evaluation (seeds ``10_000 + seed + k``, apart from the
            training episodes).
        progress: show a tqdm bar.

    Returns:
        The trained actor, the replay buffer as a dataset, snapshots and timing.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    c = config or SACConfig()
    eval_every = eval_every or max(steps // 10, 1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = make_env(env_id, seed=seed)
    obs_dim, act_dim = env_dims(env)
    agent = SAC(obs_dim, act_dim, c)
    buffer = ReplayBuffer(obs_dim, act_dim, steps)
    run = SACRun(env_id, steps, seed, c, agent.actor, buffer.to_dataset(env_id))
    obs, _ = env.reset(seed=seed)
    episode_return, start = 0.0, time.perf_counter()
    bar = tqdm(range(1, steps + 1), desc=f"SAC {env_id}", disable=not progress, mininterval=1.0)
    for t in bar:
        explore_uniform = t <= c.start_steps
        action = rng.uniform(-1, 1, act_dim) if explore_uniform else agent.act(obs, explore=True)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, reward, next_obs, terminated, truncated)
        obs, episode_return = next_obs, episode_return + float(reward)
        if terminated or truncated:
            run.train_returns.append(episode_return)
            obs, episode_return = env.reset()[0], 0.0
        if t >= c.update_after:
            for _ in range(c.updates_per_step):
                agent.update(buffer.sample(c.batch_size, rng))
        if t % eval_every == 0 or t == steps:
            eval_start = time.perf_counter()
            snap = _snapshot(agent, env_id, t, eval_episodes, 10_000 + seed)
            run.eval_s += time.perf_counter() - eval_start
            run.snapshots.append(snap)
            bar.set_postfix(eval_return=f"{snap.mean_return:.1f}")
    env.close()
    run.wall_s = time.perf_counter() - start
    run.replay = buffer.to_dataset(env_id)
    return run

"""``OfflineAgent``: the actor-critic skeleton shared by OFQL, FQL and Diffusion-QL.

One training step (one batch) is one iteration of the papers' algorithm boxes:

1. critic update: twin ``Q_1, Q_2`` regress ``r + gamma (1 - d) Q'(s', a')`` with ``a'`` from
   the agent's target policy and ``Q'`` the target critics (Diffusion-QL eq. 4);
2. actor update: the agent's behaviour-cloning term plus a Q term (:meth:`actor_loss`);
3. soft target update ``phi' <- tau phi + (1 - tau) phi'`` and the actor EMA.

Lightning's ``global_step`` counts optimizer steps, i.e. **two per iteration**; bound runs with
``max_steps = 2 * iterations`` (or ``limit_train_batches`` / ``max_epochs``).
:attr:`OfflineAgent.iteration` counts iterations and drives the EMA schedule and the per-step
random draws (reseeded by ``(seed, iteration)``, so a resumed run redraws the same noise).

Observations are normalised inside the agent (buffers ``obs_mean``, ``obs_std``): batches and
:meth:`OfflineAgent.act` take raw observations.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Iterator
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor, nn

from onestep.core.ema import ema_update_
from onestep.core.methods.dm_health import grad_norm
from onestep.core.methods.dm_random import GlobalBatchRNG
from onestep.rl.agents.losses import critic_loss, td_target
from onestep.rl.agents.nets import TwinQ

__all__ = ["AGENT_KEY", "BATCH_KEYS", "Batch", "OfflineAgent"]

Batch = dict[str, Tensor]
BATCH_KEYS: tuple[str, ...] = ("obs", "action", "reward", "next_obs", "done")
AGENT_KEY = "onestep_rl_agent"  # checkpoint entry naming the agent class (see registry.py)
EXTRA_STATE_KEY = "_extra_state"  # where nn.Module puts get_extra_state() in a state_dict
TARGET_Q: tuple[str, ...] = ("min", "mean")


class OfflineAgent(L.LightningModule):
    """Twin critics, target critics, an actor (built by the subclass) and its optional EMA.

    Subclasses set :attr:`agent_name`, build ``self.actor`` (and ``self.actor_ema`` or ``None``)
    and implement :meth:`noise_shape`, :meth:`sample_actions`, :meth:`target_actions` and
    :meth:`actor_loss`.

    Args:
        obs_dim: observation size.
        act_dim: action size; actions live in [-1, 1].
        hidden: hidden width of every network.
        depth: hidden layers of every network.
        discount: ``gamma``.
        tau: soft target-update rate, ``phi' <- tau phi + (1 - tau) phi'``.
        alpha: the agent's policy-loss weight (see the subclass: the Q weight for OFQL and
            Diffusion-QL, the distillation weight for FQL); set per task.
        actor_lr: Adam learning rate of the actor.
        critic_lr: Adam learning rate of the critics.
        ema_decay: decay of the actor EMA; ``None``: the agent keeps no EMA actor.
        ema_start: iterations during which the EMA just copies the actor.
        ema_every: update the EMA every this many iterations after ``ema_start``.
        grad_clip: clip each update's gradient norm to this (``None``: no clipping).
        critic_layer_norm: LayerNorm in the critics (FQL).
        target_q: ``"min"`` or ``"mean"`` of the two target critics in the TD target.
        num_candidates: actions sampled per state by :meth:`act`; more than 1 picks one by a
            softmax over the target critics' ``min Q`` (Diffusion-QL's action selection).
        act_with_ema: :meth:`act` samples from the EMA actor instead of the live one.
        seed: seed of the network initialisation and of the per-step random draws.
    """

    agent_name: ClassVar[str] = "agent"
    obs_mean: Tensor
    obs_std: Tensor
    actor: nn.Module
    actor_ema: nn.Module | None

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: int = 256,
        depth: int = 3,
        discount: float = 0.99,
        tau: float = 0.005,
        alpha: float = 1.0,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        ema_decay: float | None = 0.995,
        ema_start: int = 1000,
        ema_every: int = 5,
        grad_clip: float | None = None,
        critic_layer_norm: bool = False,
        target_q: str = "min",
        num_candidates: int = 1,
        act_with_ema: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        # A subclass that fixes a base argument (FQL: no EMA) does not list it: the saved
        # hyperparameters are the subclass's own signature, which is what a checkpoint rebuilds.
        own = inspect.signature(type(self).__init__).parameters
        fixed = [k for k in inspect.signature(OfflineAgent.__init__).parameters if k not in own]
        self.save_hyperparameters(ignore=fixed)
        _check_args(obs_dim, act_dim, discount, tau, ema_decay, target_q, num_candidates)
        if act_with_ema and ema_decay is None:
            raise ValueError("act_with_ema=True needs an EMA actor; set ema_decay (e.g. 0.995)")
        self.automatic_optimization = False
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        with self.seeded(0):
            self.critic = TwinQ(obs_dim, act_dim, hidden, depth, critic_layer_norm)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_ema = None  # a subclass with an EMA actor replaces it
        self.rng = GlobalBatchRNG(seed)
        self.iteration = 0

    # -- pieces a subclass provides ------------------------------------------------------------

    def noise_shape(self, n: int) -> tuple[int, ...]:
        """Shape of the noise :meth:`sample_actions` consumes for ``n`` states."""
        raise NotImplementedError

    def sample_actions(self, s: Tensor, noise: Tensor, actor: nn.Module) -> Tensor:
        """Actions ``[B, act_dim]`` in [-1, 1] of ``actor`` at normalised states ``s``."""
        raise NotImplementedError

    def target_actions(self, s: Tensor, noise: Tensor) -> Tensor:
        """Next actions ``a' ~ pi(s')`` for the TD target (called under ``no_grad``)."""
        raise NotImplementedError

    def actor_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Scalar actor loss and its logs (``bc_loss``, ``q_loss``, ...)."""
        raise NotImplementedError

    def actor_modules(self) -> tuple[nn.Module, ...]:
        """The modules the actor optimizer trains."""
        return (self.actor,)

    # -- helpers -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def seeded(self, offset: int) -> Iterator[None]:
        """Build networks under ``torch.manual_seed(seed + offset)``; global RNG restored after."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.hparams["seed"] * 1000 + offset)
            yield

    def normalize(self, obs: Tensor) -> Tensor:
        """``(obs - mean) / std``: what every network sees."""
        return (obs - self.obs_mean) / self.obs_std

    def set_obs_normalizer(self, mean: Any, std: Any) -> None:
        """Set the observation statistics (``[obs_dim]`` each; ``std > 0``)."""
        mean = torch.as_tensor(mean, dtype=self.obs_mean.dtype).reshape(-1)
        std = torch.as_tensor(std, dtype=self.obs_std.dtype).reshape(-1)
        dim = self.obs_mean.shape[0]
        if mean.shape != (dim,) or std.shape != (dim,):
            raise ValueError(
                f"obs_mean and obs_std must have shape [{dim}], got {tuple(mean.shape)} and "
                f"{tuple(std.shape)}"
            )
        if not bool((std > 0).all() & torch.isfinite(std).all() & torch.isfinite(mean).all()):
            raise ValueError(
                "obs_std must be finite and > 0 (constant observation dimensions have std 0: "
                "add a small epsilon, e.g. std + 1e-3)"
            )
        self.obs_mean.copy_(mean)
        self.obs_std.copy_(std)

    def train_noise(self, n: int) -> Tensor:
        """This iteration's noise for ``n`` states (from :attr:`rng`, this rank's rows)."""
        return self.rng.randn(self.noise_shape(n), self.device)

    def pick(self) -> int:
        """A fair coin from :attr:`rng` (Diffusion-QL's random choice of the scaling critic)."""
        return self.rng.randint(2)

    def q_policy(self, s: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """``(Q, Q_scale)`` for Diffusion-QL's Q term: one random critic and the other.

        ``Q_scale`` covers the global batch (:meth:`global_batch`).
        """
        q1, q2 = self.critic(s, a)
        q, scale = (q1, q2) if self.pick() == 0 else (q2, q1)
        return q, self.global_batch(scale)

    def global_batch(self, x: Tensor) -> Tensor:
        """``x`` (detached) from every process, concatenated; ``x`` itself in one process.

        Batch statistics such as the Q term's ``mean|Q|`` then equal a single process's on
        the same global batch.
        """
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return x.detach()
        gathered = self.all_gather(x.detach())
        assert isinstance(gathered, Tensor)
        return gathered.reshape(-1)

    # -- training ------------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        """Check the strategy; take ``obs_mean`` / ``obs_std`` from the datamodule if offered."""
        _check_ddp(self.trainer)
        dm = getattr(self.trainer, "datamodule", None)
        mean, std = getattr(dm, "obs_mean", None), getattr(dm, "obs_std", None)
        if mean is not None and std is not None:
            self.set_obs_normalizer(mean, std)

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        """Critic update, actor update, target and EMA updates; logs the losses."""
        self.rng.start(self, self.iteration)
        check_batch(batch, self.hparams["obs_dim"], self.hparams["act_dim"])
        logs = self.critic_update(batch)
        logs |= self.actor_update(batch)
        self.update_targets()
        # Lightning's self.log costs about as much as a small network's update on a CPU, so the
        # losses are logged every ``log_every_n_steps`` iterations (the Trainer's setting).
        every = int(getattr(self._trainer, "log_every_n_steps", 1) or 1)
        if self.iteration % every == 0:
            size = batch["obs"].shape[0]
            for key, value in logs.items():
                self.log(key, value, prog_bar=key in ("critic_loss", "actor_loss"), batch_size=size)
        self.iteration += 1

    def critic_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Twin-critic TD loss (Diffusion-QL eq. 4), batch mean, and its logs."""
        s, s_next = self.normalize(batch["obs"]), self.normalize(batch["next_obs"])
        with torch.no_grad():
            a_next = self.target_actions(s_next, self.train_noise(s.shape[0]))
            q1_next, q2_next = self.critic_target(s_next, a_next)
            agg = torch.minimum if self.hparams["target_q"] == "min" else _mean2
            y = td_target(
                batch["reward"], batch["done"], agg(q1_next, q2_next), self.hparams["discount"]
            )
        q1, q2 = self.critic(s, batch["action"])
        loss = critic_loss(q1, q2, y).mean()
        return loss, {"critic_loss": loss.detach(), "q_mean": q1.detach().mean()}

    def critic_update(self, batch: Batch) -> dict[str, Tensor]:
        """One Adam step of the critics; no other network moves."""
        opt = self._optimizer(1)
        with self.toggled_optimizer(opt):
            loss, logs = self.critic_loss(batch)
            opt.zero_grad()
            self.manual_backward(loss)
            logs["grad_norm/critic"] = grad_norm(self.critic.parameters(), self._clip())
            opt.step()
        return logs

    def actor_update(self, batch: Batch) -> dict[str, Tensor]:
        """One Adam step of the actor modules; critics are frozen while the loss is built."""
        opt = self._optimizer(0)
        with self.toggled_optimizer(opt):
            loss, logs = self.actor_loss(batch)
            opt.zero_grad()
            self.manual_backward(loss)
            logs["grad_norm/actor"] = grad_norm(self.actor_parameters(), self._clip())
            opt.step()
        return {"actor_loss": loss.detach(), **logs}

    @torch.no_grad()
    def update_targets(self) -> None:
        """``phi' <- tau phi + (1 - tau) phi'``; the actor EMA copies, then averages.

        The EMA copies the actor for the first ``ema_start`` iterations and afterwards moves
        every ``ema_every`` iterations (Diffusion-QL's ``step_start_ema`` / ``update_ema_every``;
        its code leaves the EMA at the initial weights before ``step_start_ema``, we copy, as
        the diffuser code it derives from does).
        """
        ema_update_(self.critic_target, self.critic, 1.0 - self.hparams["tau"])
        if self.actor_ema is None:
            return
        if self.iteration < self.hparams["ema_start"]:
            ema_update_(self.actor_ema, self.actor, 0.0)
        elif self.iteration % self.hparams["ema_every"] == 0:
            ema_update_(self.actor_ema, self.actor, self.hparams["ema_decay"])

    def actor_parameters(self) -> list[nn.Parameter]:
        """Parameters of :meth:`actor_modules`, each once."""
        seen: dict[int, nn.Parameter] = {}
        for module in self.actor_modules():
            seen.update({id(p): p for p in module.parameters()})
        return list(seen.values())

    def configure_optimizers(self) -> Any:
        """Adam for the actor modules (first) and for the critics (second)."""
        hp = self.hparams
        return [
            torch.optim.Adam(self.actor_parameters(), lr=hp["actor_lr"]),
            torch.optim.Adam(self.critic.parameters(), lr=hp["critic_lr"]),
        ]

    def _optimizer(self, index: int) -> Any:
        opts: Any = self.optimizers()
        return opts[index]

    def _clip(self) -> float | None:
        return self.hparams["grad_clip"]

    def train(self, mode: bool = True) -> OfflineAgent:
        """Switch the trained networks to ``mode``; target critics and the EMA stay in eval."""
        super().train(mode)
        self.critic_target.eval()
        if self.actor_ema is not None:
            self.actor_ema.eval()
        return self

    # -- acting --------------------------------------------------------------------------------

    @torch.no_grad()
    def act(
        self,
        obs: Tensor,
        generator: torch.Generator | None = None,
        num_candidates: int | None = None,
    ) -> Tensor:
        """Actions ``[B, act_dim]`` in [-1, 1] for raw observations ``[B, obs_dim]``.

        Runs the actor in eval mode (its mode is restored afterwards) without gradients. All
        randomness comes from ``generator`` (the global RNG when ``None``), so the same
        observations and the same seeded generator give the same actions.

        Args:
            obs: raw observations ``[B, obs_dim]``.
            generator: source of the sampling noise and of the candidate choice.
            num_candidates: sample this many actions per state and pick one by a softmax over
                the target critics' ``min Q`` (Diffusion-QL's selection); ``1`` is the bare
                sampler. ``None``: the ``num_candidates`` hyperparameter.
        """
        n = self.hparams["num_candidates"] if num_candidates is None else num_candidates
        if n < 1:
            raise ValueError(f"num_candidates must be >= 1, got {n}")
        obs_dim = self.hparams["obs_dim"]
        if obs.ndim != 2 or obs.shape[1] != obs_dim:
            raise ValueError(f"act expects obs of shape [B, {obs_dim}], got {tuple(obs.shape)}")
        actor = self.actor_ema if self.hparams.get("act_with_ema", False) else self.actor
        assert actor is not None
        # Only the actor can be in train mode here (the EMA and the target critics that
        # ``_select`` uses never leave eval). Toggling the whole agent walks every submodule:
        # ~0.9 ms per call on a 2-core CPU, most of a one-step action's cost (BENCHMARKS.md).
        was_training = actor.training
        if was_training:
            actor.eval()
        try:
            s = self.normalize(obs.to(self.obs_mean))
            if n > 1:
                s = s.repeat_interleave(n, dim=0)  # (B n, obs_dim), candidates of a state adjacent
            noise = _randn(self.noise_shape(s.shape[0]), generator, self.obs_mean)
            actions = self.sample_actions(s, noise, actor).clamp(-1.0, 1.0)
            if n > 1:
                actions = self._select(s, actions, n, generator)
        finally:
            if was_training:
                actor.train()
        return actions

    def _select(
        self, s: Tensor, actions: Tensor, n: int, generator: torch.Generator | None
    ) -> Tensor:
        """One of ``n`` candidates per state, drawn with probabilities ``softmax(min Q')``."""
        q = torch.minimum(*self.critic_target(s, actions)).view(-1, n)  # (B, n)
        probs = torch.softmax(q.double(), dim=1)
        if generator is not None:
            probs = probs.to(generator.device)
        idx = torch.multinomial(probs, 1, generator=generator).to(actions.device)  # (B, 1)
        return actions.view(-1, n, actions.shape[1])[torch.arange(q.shape[0]), idx[:, 0]]

    # -- checkpoints ---------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Name the agent class (read by :func:`onestep.rl.agents.load_agent`) and the iteration."""
        checkpoint[AGENT_KEY] = self.agent_name
        checkpoint["onestep_rl_iteration"] = self.iteration

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the iteration counter (EMA schedule, per-step draws).

        A checkpoint written before the counter joined the ``state_dict`` gets it from its
        ``onestep_rl_iteration`` entry, so a strict load still finds every key.
        """
        self.iteration = int(checkpoint.get("onestep_rl_iteration", 0))
        state = checkpoint.get("state_dict")
        if isinstance(state, dict):
            state.setdefault(EXTRA_STATE_KEY, torch.tensor(self.iteration))

    def get_extra_state(self) -> Tensor:
        """The iteration counter, carried by ``state_dict``.

        ``ddp_spawn`` hands the parent process only rank 0's ``state_dict``; with the counter in
        it, the parent resumes the EMA schedule and the per-step draws where training stopped.
        """
        return torch.tensor(self.iteration)

    def set_extra_state(self, state: Any) -> None:
        """Restore the counter written by :meth:`get_extra_state`."""
        self.iteration = int(state)


def _check_ddp(trainer: L.Trainer) -> None:
    """Refuse DDP without unused-parameter detection: each update moves only some networks."""
    kwargs = getattr(trainer.strategy, "_ddp_kwargs", None)
    if trainer.world_size > 1 and kwargs is not None and not kwargs.get("find_unused_parameters"):
        raise ValueError(
            "the offline-RL agents update the critics and the actor in separate steps, so DDP "
            "must detect unused parameters: use strategy='ddp_find_unused_parameters_true' (or "
            "DDPStrategy(find_unused_parameters=True))"
        )


def _mean2(a: Tensor, b: Tensor) -> Tensor:
    return 0.5 * (a + b)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal on ``like``'s device, drawn on the generator's device when one is given."""
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    return torch.randn(shape, generator=generator, device=generator.device).to(like)


def _check_args(
    obs_dim: int,
    act_dim: int,
    discount: float,
    tau: float,
    ema_decay: float | None,
    target_q: str,
    num_candidates: int,
) -> None:
    if obs_dim < 1 or act_dim < 1:
        raise ValueError(f"obs_dim and act_dim must be >= 1, got {obs_dim} and {act_dim}")
    if not 0.0 <= discount <= 1.0:
        raise ValueError(f"discount must lie in [0, 1], got {discount}")
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must lie in (0, 1], got {tau}; the papers use 0.005")
    if ema_decay is not None and not 0.0 <= ema_decay <= 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1] (or be None), got {ema_decay}")
    if target_q not in TARGET_Q:
        raise ValueError(f"unknown target_q {target_q!r}; use one of {TARGET_Q}")
    if num_candidates < 1:
        raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")


def check_batch(batch: Batch, obs_dim: int, act_dim: int) -> None:
    """Raise unless ``batch`` has the five keys: ``[B, obs_dim]``, ``[B, act_dim]`` or ``[B]``."""
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise KeyError(f"batch lacks {missing}; an offline-RL batch has keys {BATCH_KEYS}")
    b = batch["obs"].shape[0]
    want = {
        "obs": (b, obs_dim),
        "action": (b, act_dim),
        "reward": (b,),
        "next_obs": (b, obs_dim),
        "done": (b,),
    }
    bad = {k: tuple(batch[k].shape) for k, shape in want.items() if tuple(batch[k].shape) != shape}
    if bad:
        raise ValueError(f"batch shapes {bad} do not match {want} (reward and done are [B])")

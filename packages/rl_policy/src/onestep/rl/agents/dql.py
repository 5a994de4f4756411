"""Diffusion-QL: the multi-step baseline OFQL and FQL are measured against.

Wang, Hunt & Zhou 2023, "Diffusion Policies as an Expressive Policy Class for Offline
Reinforcement Learning".

* Policy: an epsilon-prediction diffusion model ``eps_theta(a_k, k | s)`` on a ``T = 5`` step VP
  chain (:class:`~onestep.rl.agents.ddpm.VPChain`); an action is a full reverse chain.
* BC term: ``E ||e - eps_theta(sqrt(abar_k) a + sqrt(1 - abar_k) e, k | s)||^2`` (eq. 2;
  Ho et al. 2020's simple loss), ``k`` uniform.
* Q term: ``-alpha Q_i(s, a_pi) / mean|Q_j|`` (eq. 3, ``alpha = eta / E|Q|``) with ``a_pi`` from
  the whole reverse chain: the gradient flows recursively through all ``T`` steps.
* Critic target: ``a'`` from the **EMA** actor's chain at ``s'`` (eq. 4, the public code).
* Acting: 50 candidate actions per state, one drawn with probabilities ``softmax(min Q')``
  (the public code's ``sample_action``); ``act(obs, num_candidates=1)`` runs the bare chain.
  The public code samples from the live actor (not the EMA) there; so does ``act`` by default.

Left out of the public code's recipe: the max-Q backup (AntMaze only); its per-task gradient-norm
clip (``gn`` 1-10, here ``grad_clip``, off by default); and its ``--lr_decay``, which matters
less than it reads: the cosine schedule has ``T_max = num_epochs`` (2000 on MuJoCo) but steps
once per training call of 50 epochs, so after the full 2M iterations the learning rate is still
99.9% of its start (``(1 + cos(pi 40 / 2000)) / 2``). A constant learning rate is what that code
trains with.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from onestep.core.objectives.distances import squared_l2
from onestep.rl.agents.base import Batch, OfflineAgent
from onestep.rl.agents.ddpm import VPChain
from onestep.rl.agents.losses import normalized_q_loss
from onestep.rl.agents.nets import ConditionalMLP

__all__ = ["DQL"]


class DQL(OfflineAgent):
    """Diffusion Q-learning: a ``T``-step diffusion policy with a Q term through the chain.

    Args:
        obs_dim: observation size.
        act_dim: action size; actions live in [-1, 1].
        hidden: hidden width of every network.
        depth: hidden layers of every network.
        discount: ``gamma``.
        tau: soft target-update rate.
        alpha: weight ``eta`` of the normalised Q term; set per task.
        actor_lr: Adam learning rate of the noise predictor.
        critic_lr: Adam learning rate of the critics.
        ema_decay: decay of the EMA actor (Diffusion-QL: 0.995).
        ema_start: iterations during which the EMA copies the actor (Diffusion-QL: 1000).
        ema_every: EMA update period after ``ema_start`` (Diffusion-QL: 5).
        grad_clip: gradient-norm clip of each update (Diffusion-QL's ``grad_norm``, default 1;
            set per task).
        critic_layer_norm: LayerNorm in the critics (Diffusion-QL: off).
        target_q: ``"min"`` (Diffusion-QL) or ``"mean"`` of the target critics.
        num_candidates: candidate actions per state in :meth:`act` (Diffusion-QL: 50).
        act_with_ema: :meth:`act` samples from the EMA actor (Diffusion-QL's code: live actor).
        n_timesteps: diffusion steps ``T`` (Diffusion-QL on D4RL: 5).
        beta_min: ``beta_min`` of the VP schedule.
        beta_max: ``beta_max`` of the VP schedule.
        time_dim: size of the step embedding.
        seed: initialisation and per-step draw seed.
    """

    agent_name = "dql"

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
        grad_clip: float | None = 1.0,
        critic_layer_norm: bool = False,
        target_q: str = "min",
        num_candidates: int = 50,
        act_with_ema: bool = False,
        n_timesteps: int = 5,
        beta_min: float = 0.1,
        beta_max: float = 10.0,
        time_dim: int = 16,
        seed: int = 0,
    ):
        super().__init__(
            obs_dim,
            act_dim,
            hidden,
            depth,
            discount,
            tau,
            alpha,
            actor_lr,
            critic_lr,
            ema_decay,
            ema_start,
            ema_every,
            grad_clip,
            critic_layer_norm,
            target_q,
            num_candidates,
            act_with_ema,
            seed,
        )
        if ema_decay is None:
            raise ValueError(
                "Diffusion-QL takes its target actions from an EMA actor; set ema_decay"
            )
        self.chain = VPChain(n_timesteps, beta_min, beta_max)
        with self.seeded(1):
            self.actor = ConditionalMLP(obs_dim, act_dim, 1, hidden, depth, time_dim)
        self.actor_ema = copy.deepcopy(self.actor).requires_grad_(False)

    def noise_shape(self, n: int) -> tuple[int, ...]:
        """``a_T`` and the ``T - 1`` ancestral-step draws: ``(n, T, act_dim)``."""
        return (n, self.hparams["n_timesteps"], self.hparams["act_dim"])

    def sample_actions(self, s: Tensor, noise: Tensor, actor: nn.Module) -> Tensor:
        """The full reverse chain (differentiable when called with gradients enabled)."""
        return self.chain.sample(actor, s, noise)

    def target_actions(self, s: Tensor, noise: Tensor) -> Tensor:
        """The EMA actor's chain."""
        assert self.actor_ema is not None
        return self.sample_actions(s, noise, self.actor_ema)

    def bc_loss(self, s: Tensor, a: Tensor) -> Tensor:
        """Epsilon-prediction loss at a uniform step ``k`` (eq. 2), ``[B]``."""
        n, steps = a.shape[0], self.hparams["n_timesteps"]
        k = (self.rng.uniform(n, 0.0, float(steps), self.device)).long().clamp(max=steps - 1)
        e = self.rng.randn(a.shape, self.device).to(a)
        eps_hat = self.actor(self.chain.add_noise(a, e, k), s, self.chain.time(k).to(a))
        return squared_l2(eps_hat, e)

    def actor_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Diffusion BC + ``alpha`` times the normalised Q term through the whole chain."""
        s, a = self.normalize(batch["obs"]), batch["action"]
        bc = self.bc_loss(s, a).mean()
        a_pi = self.sample_actions(s, self.train_noise(s.shape[0]).to(a), self.actor)
        q, q_scale = self.q_policy(s, a_pi)
        q_loss = normalized_q_loss(q, q_scale).mean()
        loss = bc + self.hparams["alpha"] * q_loss
        return loss, {"bc_loss": bc.detach(), "q_loss": q_loss.detach()}

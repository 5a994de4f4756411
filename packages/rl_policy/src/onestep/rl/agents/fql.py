"""FQL: flow Q-learning (Park, Li & Levine 2025, "Flow Q-Learning", sec. 4 and Algorithm 1).

Two actor networks, trained by one loss and one optimizer:

* ``bc_flow`` ``v_psi(a_t, t | s)``: a flow-matching behaviour-cloning policy, trained only by
  the flow-matching loss (Lipman et al. 2023; onestep's times: ``t = 0`` action, ``t = 1``
  noise, ``v = e - a``);
* ``actor`` ``mu_w(s, z)``: a one-step policy from noise ``z`` to an action, trained by
  ``-Q(s, mu_w(s, z)) + alpha ||mu_w(s, z) - sg(a_flow(s, z))||^2`` where ``a_flow`` is the
  BC flow's Euler solution from the same ``z`` (``flow_steps`` steps). The stop-gradient is the
  point: the distillation term and the Q term never reach ``psi`` (in FQL's JAX code the target
  is computed with the non-differentiated parameters; here under ``torch.no_grad``).

The actor loss is ``L_flow(psi) + alpha L_distill(w) + L_Q(w)``: FQL's ``alpha`` weighs the
distillation term, the Q term has weight 1 and is divided by ``mean|Q|`` only with
``normalize_q_loss`` (FQL's default: off). The Q term uses the mean of the two critics, clipped
actions, and the critic target uses the current one-step policy at ``s'`` (FQL has no EMA actor).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from onestep.core.objectives.flow_matching import flow_matching_loss, straight_interpolation
from onestep.rl.agents.base import Batch, OfflineAgent
from onestep.rl.agents.losses import distill_loss, normalized_q_loss
from onestep.rl.agents.nets import ConditionalMLP

__all__ = ["FQL", "euler_flow_actions"]


@torch.no_grad()
def euler_flow_actions(flow: nn.Module, s: Tensor, z: Tensor, steps: int) -> Tensor:
    """The BC flow's action from noise ``z``: Euler from ``t = 1`` to ``t = 0``, then clipped.

    ``a <- a - v(a, t | s) / K`` at ``t = 1, 1 - 1/K, ..., 1/K`` (FQL's ``compute_flow_actions``
    in onestep's time direction). Runs without gradient: it is FQL's distillation target.
    """
    a = z
    ones = torch.ones(z.shape[0], device=z.device, dtype=z.dtype)
    for i in range(steps):
        a = a - flow(a, s, ones * (1.0 - i / steps)) / steps
    return a.clamp(-1.0, 1.0)


class FQL(OfflineAgent):
    """Flow Q-learning: a one-step policy distilled from a flow BC policy and pushed up Q.

    Args:
        obs_dim: observation size.
        act_dim: action size; actions live in [-1, 1].
        hidden: hidden width of every network.
        depth: hidden layers of every network.
        discount: ``gamma``.
        tau: soft target-update rate.
        alpha: weight of the distillation term (FQL's BC coefficient; set per task, FQL's
            default 10).
        actor_lr: Adam learning rate of the BC flow and the one-step policy.
        critic_lr: Adam learning rate of the critics.
        grad_clip: gradient-norm clip of each update (``None``: none, as FQL).
        critic_layer_norm: LayerNorm in the critics (FQL: on).
        target_q: ``"mean"`` (FQL's default ``q_agg``) or ``"min"`` of the target critics.
        num_candidates: actions per state in :meth:`act` (1: FQL's sampling).
        flow_steps: Euler steps of the BC flow for the distillation target (FQL: 10).
        normalize_q_loss: divide the Q term by ``mean|Q|`` (FQL's ``normalize_q_loss``).
        time_dim: size of the BC flow's time embedding.
        seed: initialisation and per-step draw seed.
    """

    agent_name = "fql"

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: int = 256,
        depth: int = 3,
        discount: float = 0.99,
        tau: float = 0.005,
        alpha: float = 10.0,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        grad_clip: float | None = None,
        critic_layer_norm: bool = True,
        target_q: str = "mean",
        num_candidates: int = 1,
        flow_steps: int = 10,
        normalize_q_loss: bool = False,
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
            ema_decay=None,
            grad_clip=grad_clip,
            critic_layer_norm=critic_layer_norm,
            target_q=target_q,
            num_candidates=num_candidates,
            seed=seed,
        )
        if flow_steps < 1:
            raise ValueError(f"flow_steps must be >= 1, got {flow_steps}; FQL uses 10")
        with self.seeded(1):
            self.bc_flow = ConditionalMLP(obs_dim, act_dim, 1, hidden, depth, time_dim)
        with self.seeded(2):
            self.actor = ConditionalMLP(obs_dim, act_dim, 0, hidden, depth, time_dim)

    def actor_modules(self) -> tuple[nn.Module, ...]:
        """The BC flow and the one-step policy share FQL's single actor loss and optimizer."""
        return (self.bc_flow, self.actor)

    def noise_shape(self, n: int) -> tuple[int, ...]:
        """One Gaussian action-space draw per state."""
        return (n, self.hparams["act_dim"])

    def sample_actions(self, s: Tensor, noise: Tensor, actor: nn.Module) -> Tensor:
        """The one-step policy ``clip(mu_w(s, z))``."""
        return actor(noise, s).clamp(-1.0, 1.0)

    def target_actions(self, s: Tensor, noise: Tensor) -> Tensor:
        """FQL's critic target uses the current one-step policy."""
        return self.sample_actions(s, noise, self.actor)

    def flow_actions(self, s: Tensor, z: Tensor) -> Tensor:
        """The BC flow's Euler action (no gradient), FQL's distillation target."""
        return euler_flow_actions(self.bc_flow, s, z, self.hparams["flow_steps"])

    def bc_flow_loss(self, s: Tensor, a: Tensor) -> Tensor:
        """Flow matching on dataset actions, ``[B]`` (mean over action dimensions)."""
        e = self.rng.randn(a.shape, self.device).to(a)
        t = self.rng.uniform(a.shape[0], 0.0, 1.0, self.device).to(a)
        v_pred = self.bc_flow(straight_interpolation(a, e, t), s, t)
        return flow_matching_loss(v_pred, a, e)

    def policy_losses(self, s: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(distill [B], q_loss [B])`` of the one-step policy at noise ``z``."""
        target = self.flow_actions(s, z)
        a_pi = self.actor(z, s)
        distill = distill_loss(a_pi, target)
        q1, q2 = self.critic(s, a_pi.clamp(-1.0, 1.0))
        q = 0.5 * (q1 + q2)
        normalize = self.hparams["normalize_q_loss"]
        q_loss = normalized_q_loss(q, self.global_batch(q)) if normalize else -q
        return distill, q_loss

    def actor_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """``L_flow + alpha L_distill + L_Q`` (FQL sec. 4)."""
        s, a = self.normalize(batch["obs"]), batch["action"]
        bc = self.bc_flow_loss(s, a).mean()
        distill, q_loss = self.policy_losses(s, self.train_noise(s.shape[0]).to(a))
        distill, q_loss = distill.mean(), q_loss.mean()
        loss = bc + self.hparams["alpha"] * distill + q_loss
        logs = {"bc_loss": bc.detach(), "distill_loss": distill.detach(), "q_loss": q_loss.detach()}
        return loss, logs

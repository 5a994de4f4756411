"""Pure per-sample losses of the offline-RL agents: tensors in, ``[B]`` out, no networks, no RNG.

The behaviour-cloning terms come from core (:mod:`onestep.core.objectives`: flow matching,
MeanFlow, denoising); what is specific to Q-learning lives here.
"""

from __future__ import annotations

from torch import Tensor

from onestep.core.objectives.distances import squared_l2
from onestep.core.objectives.dsm import check_same_shape

__all__ = ["critic_loss", "distill_loss", "normalized_q_loss", "td_target"]


def td_target(reward: Tensor, done: Tensor, next_q: Tensor, discount: float) -> Tensor:
    """One-step TD target ``y = r + gamma (1 - d) Q'(s', a')``, detached.

    Diffusion-QL (Wang et al. 2023), eq. 4, with ``Q'`` the target critics' minimum (or mean,
    FQL's ``q_agg``) at the policy's next action ``a' ~ pi(s')``.

    Args:
        reward: ``[B]``.
        done: ``[B]``, 1 where ``s'`` is terminal (no bootstrap).
        next_q: ``Q'(s', a')``, ``[B]``.
        discount: ``gamma``.
    """
    check_same_shape(reward=reward, done=done, next_q=next_q)
    return (reward + discount * (1.0 - done) * next_q).detach()


def critic_loss(q1: Tensor, q2: Tensor, target: Tensor) -> Tensor:
    """Both critics' squared TD errors, ``(Q_1 - y)^2 + (Q_2 - y)^2`` per sample.

    Diffusion-QL eq. 4 (clipped double Q, Fujimoto et al. 2018); ``target`` is
    :func:`td_target` (treated as a constant).
    """
    check_same_shape(q1=q1, q2=q2, target=target)
    y = target.detach()
    return (q1 - y).square() + (q2 - y).square()


def normalized_q_loss(q: Tensor, q_scale: Tensor) -> Tensor:
    """``-Q(s, pi(s)) / mean|Q_scale|``: the policy-improvement term with a scale-free weight.

    Diffusion-QL (Wang et al. 2023), eq. 3 with ``alpha = eta / E|Q(s, a)|``: the public code
    divides ``Q_1`` by ``mean|Q_2|`` (or the other way round, chosen at random each step), FQL's
    ``normalize_q_loss`` divides the critics' mean by its own ``mean|Q|``. The scale is a batch
    statistic, detached, so the gradient w.r.t. ``q`` is ``-1 / mean|Q_scale|`` per sample.

    Args:
        q: ``Q(s, a_pi)`` with gradient to the policy, ``[B]``.
        q_scale: the values whose mean magnitude sets the scale (detached here): ``[B]``, or
            the whole global batch's under data parallelism (``[world_size * B]``), so that
            every process divides by the same statistic a single process would.
    """
    if q.ndim != 1 or q_scale.ndim != 1 or q_scale.numel() == 0:
        raise ValueError(
            f"q and q_scale are 1-D batches, got shapes {tuple(q.shape)} and {tuple(q_scale.shape)}"
        )
    return -q / q_scale.detach().abs().mean()


def distill_loss(action: Tensor, target: Tensor) -> Tensor:
    """``mean_dims (a_pi - sg(a_flow))^2``: FQL's distillation term (Park et al. 2025, sec. 4).

    The one-step policy ``mu_w(s, z)`` regresses the BC flow's Euler solution from the same
    noise ``z``; ``target`` is detached here as well, so the loss can never reach the flow.

    Args:
        action: the one-step policy's action ``mu_w(s, z)``, ``[B, act_dim]``.
        target: the flow's action from the same ``(s, z)``, same shape.
    """
    check_same_shape(action=action, target=target)
    return squared_l2(action, target.detach())

"""The agents' math: pure losses, FQL's stop-gradient, Diffusion-QL's recursive gradient through
the chain, OFQL's single evaluation, the VP chain against Diffusion-QL's formulas."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from onestep.core.testing import grad_of
from onestep.rl.agents import DQL, FQL, OFQL
from onestep.rl.agents.ddpm import VPChain, vp_betas
from onestep.rl.agents.fql import euler_flow_actions
from onestep.rl.agents.losses import critic_loss, distill_loss, normalized_q_loss, td_target
from onestep.rl.agents.ofql import one_step_action

OBS, ACT = 4, 2
TINY: dict[str, Any] = {"hidden": 16, "depth": 2, "time_dim": 4}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- pure losses ---------------------------------------------------------------------------------


def test_td_target_bootstraps_only_non_terminal_transitions():
    r, d, q = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0]), torch.tensor([10.0, 10.0])
    y = td_target(r, d, q.requires_grad_(), 0.9)
    torch.testing.assert_close(y, torch.tensor([10.0, 2.0]))
    assert not y.requires_grad


def test_critic_loss_is_both_squared_errors_per_sample():
    q1, q2, y = torch.tensor([1.0, 0.0]), torch.tensor([3.0, 1.0]), torch.tensor([2.0, 0.0])
    torch.testing.assert_close(critic_loss(q1, q2, y), torch.tensor([2.0, 1.0]))


def test_normalized_q_loss_gradient_is_minus_one_over_mean_abs_scale():
    q, scale = torch.randn(6), torch.randn(6)
    (g_q, g_scale) = grad_of(normalized_q_loss, q, scale)
    torch.testing.assert_close(g_q, torch.full((6,), -1.0 / float(scale.abs().mean())))
    assert torch.equal(g_scale, torch.zeros(6))  # the scale is a detached statistic


def test_normalized_q_loss_takes_a_global_batch_scale_and_refuses_other_shapes():
    q, scale = torch.randn(3), torch.randn(6)  # a DDP process's [B] against the global [2B]
    torch.testing.assert_close(normalized_q_loss(q, scale), -q / scale.abs().mean())
    for bad_q, bad_scale in ((q[:, None], scale), (q, scale[:, None]), (q, scale[:0])):
        with pytest.raises(ValueError, match="1-D batches"):
            normalized_q_loss(bad_q, bad_scale)


def test_distill_loss_never_differentiates_its_target():
    a, target = torch.randn(5, ACT), torch.randn(5, ACT)
    g_a, g_target = grad_of(distill_loss, a, target)
    torch.testing.assert_close(g_a, 2 * (a - target) / ACT)  # d/da mean_dims (a - t)^2
    assert torch.equal(g_target, torch.zeros_like(target))


# -- FQL's stop-gradient -------------------------------------------------------------------------


def _grads(loss: torch.Tensor, module: torch.nn.Module) -> list[torch.Tensor | None]:
    params = list(module.parameters())
    return list(torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True))


def _all_none_or_zero(grads: list[torch.Tensor | None]) -> bool:
    return all(g is None or not bool(g.any()) for g in grads)


def test_fql_distillation_and_q_terms_never_reach_the_bc_flow():
    agent = FQL(OBS, ACT, **TINY)
    s, z = torch.randn(64, OBS), torch.randn(64, ACT)
    distill, q_loss = agent.policy_losses(s, z)
    for term in (distill.mean(), q_loss.mean()):
        assert _all_none_or_zero(_grads(term, agent.bc_flow))
        assert not _all_none_or_zero(_grads(term, agent.actor))
    # The flow-matching term is the only one that trains the flow, and it leaves the policy be.
    bc = agent.bc_flow_loss(s, torch.rand(64, ACT) * 2 - 1).mean()
    assert not _all_none_or_zero(_grads(bc, agent.bc_flow))
    assert _all_none_or_zero(_grads(bc, agent.actor))


def test_the_stop_gradient_check_would_catch_a_leak():
    """Without ``no_grad`` the Euler target carries a graph to the flow: the test above can fail."""
    agent = FQL(OBS, ACT, **TINY)
    s, z = torch.randn(64, OBS), torch.randn(64, ACT)
    leaky = euler_flow_actions.__wrapped__(agent.bc_flow, s, z, 10)  # type: ignore[attr-defined]
    assert leaky.requires_grad
    assert not euler_flow_actions(agent.bc_flow, s, z, 10).requires_grad
    leak = ((agent.actor(z, s) - leaky) ** 2).mean()
    assert not _all_none_or_zero(_grads(leak, agent.bc_flow))


def test_fql_euler_rollout_integrates_a_constant_velocity_exactly():
    class Constant(torch.nn.Module):
        def forward(self, a, s, t):
            return torch.full_like(a, 0.5)

    z = torch.zeros(3, ACT)
    out = euler_flow_actions(Constant(), torch.zeros(3, OBS), z, 10)
    torch.testing.assert_close(out, torch.full((3, ACT), -0.5))  # a_0 = a_1 - int_0^1 v dt


# -- Diffusion-QL's recursive gradient -----------------------------------------------------------


def test_dql_q_gradient_flows_through_every_step_of_the_chain():
    agent = DQL(OBS, ACT, **TINY)
    steps = agent.hparams["n_timesteps"]
    outputs: list[torch.Tensor] = []

    def keep(module, inputs, out):
        out.retain_grad()
        outputs.append(out)

    handle = agent.actor.register_forward_hook(keep)
    s = torch.randn(256, OBS)
    a = agent.sample_actions(s, torch.randn(256, steps, ACT), agent.actor)
    handle.remove()
    q, q_scale = agent.q_policy(s, a)
    normalized_q_loss(q, q_scale).mean().backward()
    assert len(outputs) == steps
    for k, out in enumerate(outputs):  # out of the first (noisiest) step first
        assert out.grad is not None and bool(out.grad.abs().sum() > 0), f"step {k} got no gradient"


def test_a_detached_chain_would_fail_the_recursion_check():
    """Cutting the graph between steps leaves the early steps without gradient."""
    chain = VPChain(5)
    net = DQL(OBS, ACT, **TINY).actor
    s, noise = torch.randn(64, OBS), torch.randn(64, 5, ACT)
    x = noise[:, 0]
    first = None
    for j, k in enumerate(reversed(range(5))):
        eps = net(x.detach(), s, chain.time(torch.full((64,), k)))
        first = eps if first is None else first
        x = chain.step(eps, x.detach(), k, noise[:, j + 1] if k > 0 else None)
    assert first is not None and first.requires_grad
    (grad,) = torch.autograd.grad(x.sum(), [first], allow_unused=True)
    assert grad is None


# -- the VP chain --------------------------------------------------------------------------------


def test_vp_betas_follow_diffusion_ql():
    betas = vp_betas(5)
    for k in range(1, 6):  # beta_k = 1 - exp(-b_min / T - (b_max - b_min)(2k - 1) / (2 T^2))
        expected = 1 - math.exp(-0.1 / 5 - 0.5 * 9.9 * (2 * k - 1) / 25)
        assert float(betas[k - 1]) == pytest.approx(expected, rel=1e-12)
    assert bool((betas[1:] > betas[:-1]).all())


def test_chain_noising_and_last_step_match_ddpm():
    chain = VPChain(5)
    ac = torch.cumprod(1 - vp_betas(5), 0).float()
    a, e = torch.rand(5, ACT) * 2 - 1, torch.randn(5, ACT)
    k = torch.arange(5)
    expected = ac[k].sqrt()[:, None] * a + (1 - ac[k]).sqrt()[:, None] * e
    torch.testing.assert_close(chain.add_noise(a, e, k), expected)
    # At k = 0 the posterior mean is the clipped clean-action estimate itself.
    x, eps_hat = torch.randn(5, ACT) * 0.3, torch.randn(5, ACT) * 0.1
    x0 = ((x - (1 - ac[0]).sqrt() * eps_hat) / ac[0].sqrt()).clamp(-1, 1)
    torch.testing.assert_close(chain.step(eps_hat, x, 0, torch.randn(5, ACT)), x0)


# -- OFQL ----------------------------------------------------------------------------------------


def test_ofql_one_step_action_is_one_evaluation_at_r0_t1():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, a, s, t, gap):
            seen.append((t.clone(), gap.clone()))
            return torch.full_like(a, 0.25)

    e = torch.randn(4, ACT)
    out = one_step_action(Probe(), torch.zeros(4, OBS), e)
    torch.testing.assert_close(out, e - 0.25)
    assert len(seen) == 1
    assert torch.equal(seen[0][0], torch.ones(4)) and torch.equal(seen[0][1], torch.ones(4))


def test_ofql_q_term_reaches_the_policy_through_one_evaluation():
    agent = OFQL(OBS, ACT, **TINY)
    calls = []
    agent.actor.register_forward_hook(lambda m, i, o: calls.append(1))
    s = torch.randn(32, OBS)
    a_pi = agent.sample_actions(s, torch.randn(32, ACT), agent.actor)
    assert len(calls) == 1
    q, q_scale = agent.q_policy(s, a_pi)
    grads = _grads(normalized_q_loss(q, q_scale).mean(), agent.actor)
    assert not _all_none_or_zero(grads)


def test_ofql_times_respect_the_fractions():
    agent = OFQL(OBS, ACT, **TINY, ratio=0.5, onestep_frac=0.25)
    agent.rng.reseed(0)
    r, t = agent.sample_times(20_000)
    assert bool((r <= t).all()) and bool((r >= 0).all()) and bool((t <= 1).all())
    jump = (r == 0) & (t == 1)
    assert float(jump.float().mean()) == pytest.approx(0.25, abs=0.02)
    gap = (r < t) & ~jump
    assert float(gap.float().mean()) == pytest.approx(0.75 * 0.5, abs=0.02)


def test_ofql_bc_loss_trains_the_average_velocity():
    agent = OFQL(OBS, ACT, **TINY)
    agent.rng.reseed(0)
    loss = agent.bc_loss(torch.randn(16, OBS), torch.rand(16, ACT) * 2 - 1)
    assert loss.shape == (16,) and bool(torch.isfinite(loss).all())
    assert not _all_none_or_zero(_grads(loss.mean(), agent.actor))


def test_ofql_bc_loss_is_the_meanflow_identity_on_a_known_velocity():
    """With ``u(z, r, t) = W z + b t + c (t - r)`` the total derivative along ``(v, 0, 1)`` is
    ``W v + b + c``, so the target is ``v - (t - r)(W v + b + c)`` (MeanFlow eq. 6, 8) and the
    loss ``sg(w) ||u - u_tgt||^2 / act_dim`` with ``w = (||.||^2 + c0)^-p`` (eq. 9-10)."""
    torch.manual_seed(0)
    w_mat, b, c = torch.randn(ACT, ACT), torch.randn(ACT), torch.randn(ACT)

    class Linear(torch.nn.Module):
        def forward(self, a_t, s, t, gap):
            return a_t @ w_mat.T + t[:, None] * b + gap[:, None] * c

    agent = OFQL(OBS, ACT, **TINY, meanflow_p=0.5, meanflow_c=1e-3)
    agent.actor = Linear()
    s, a = torch.randn(64, OBS), torch.rand(64, ACT) * 2 - 1
    agent.rng.reseed(0)
    loss = agent.bc_loss(s, a)
    agent.rng.reseed(0)  # the same draws, by hand
    e = agent.rng.randn(a.shape, agent.device).to(a)
    r, t = agent.sample_times(64)
    assert bool((r < t).any()), "the check needs pairs with r < t"
    z = (1 - t[:, None]) * a + t[:, None] * e
    v = e - a
    u = z @ w_mat.T + t[:, None] * b + (t - r)[:, None] * c
    u_tgt = v - (t - r)[:, None] * (v @ w_mat.T + b + c)
    sq = (u - u_tgt).square().sum(1)
    expected = (sq + 1e-3).pow(-0.5) * sq / ACT
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)

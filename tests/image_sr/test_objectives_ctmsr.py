"""CTMSR objectives: process endpoints, PF-ODE, boundary condition, CT / DTM gradients, and a
tiny SR problem that CT must solve in one step."""

import pytest
import torch
from torch.testing import assert_close

from onestep.core.objectives import pseudo_huber
from onestep.core.testing import TinyMLP, grad_of
from onestep.sr.objectives import (
    CTMSRProcess,
    charbonnier,
    ctmsr_consistency,
    ctmsr_ct_loss,
    ctmsr_ct_pair,
    ctmsr_num_points,
    ctmsr_time_grid,
    dtm_inputs,
    dtm_loss,
    dtm_target,
    dtm_weight,
)

SHAPE = (5, 3, 4, 2)  # rank-4 on purpose: reductions must cover every non-batch dim
NUMEL = 3 * 4 * 2
F64 = torch.float64


def _randn(*shape):
    return torch.randn(*(shape or SHAPE), dtype=F64)


def _per_sample(v):
    return v.reshape(-1, *([1] * (len(SHAPE) - 1)))


def _full(value, n=SHAPE[0]):
    return torch.full((n,), float(value), dtype=F64)


# ------------------------------------------------------------------------------------------
# The process and its PF-ODE


@pytest.mark.parametrize(
    "process",
    [CTMSRProcess(), CTMSRProcess(sigma_max=2.0, rho_noise=3.0, rho_shift=2.0)],
    ids=["official", "curved"],
)
def test_marginal_endpoints_are_hr_and_noisy_lr(process):
    x0, y, eps = _randn(), _randn(), _randn()
    assert torch.equal(process.add_noise(x0, y, eps, _full(0.0)), x0)
    assert_close(process.add_noise(x0, y, eps, _full(1.0)), y + process.sigma_max * eps)


def test_official_defaults_are_the_linear_path():
    # Official config: sigma_min 0, sigma_max 1, rho 1: x_t = x0 + t (y - x0) + t eps.
    x0, y, eps = _randn(), _randn(), _randn()
    t = torch.rand(SHAPE[0], dtype=F64)
    tt = _per_sample(t)
    assert_close(CTMSRProcess().add_noise(x0, y, eps, t), x0 + tt * (y - x0) + tt * eps)


def test_sigma_min_is_the_residual_noise_at_t0():
    process = CTMSRProcess(sigma_max=1.0, sigma_min=0.05, rho_noise=7.0)
    x0, y, eps = _randn(), _randn(), _randn()
    assert_close(process.add_noise(x0, y, eps, _full(0.0)), x0 + 0.05 * eps)
    assert_close(process.sigma(_full(1.0)), _full(1.0))


def test_derivatives_match_autograd():
    process = CTMSRProcess(sigma_max=1.5, sigma_min=0.01, rho_noise=3.0, rho_shift=2.0)
    t = torch.rand(7, dtype=F64) * 0.9 + 0.05
    for f, df in ((process.shift, process.d_shift), (process.sigma, process.d_sigma)):
        (g,) = grad_of(f, t)
        assert_close(df(t), g)


def test_velocity_is_the_time_derivative_along_a_known_trajectory():
    # With D = x0 (the true HR of this trajectory), the PF-ODE velocity equals d/dt x_t(x0, eps).
    process = CTMSRProcess(sigma_max=1.3, rho_noise=2.0, rho_shift=1.5)
    x0, y, eps = _randn(), _randn(), _randn()
    t = torch.rand(SHAPE[0], dtype=F64) * 0.9 + 0.05
    x_t = process.add_noise(x0, y, eps, t)
    _, dxdt = torch.autograd.functional.jvp(
        lambda t: process.add_noise(x0, y, eps, t), (t,), (torch.ones_like(t),)
    )
    assert_close(process.velocity(x_t, y, x0, t), dxdt)
    assert_close(process.eps_from_x0(x_t, y, x0, t), eps)


def _euler(process, x, y, denoise, steps):
    ts = torch.linspace(1.0, 0.0, steps + 1, dtype=F64)
    for i in range(steps):
        t = ts[i].expand(x.shape[0])
        x = x + (ts[i + 1] - ts[i]) * process.velocity(x, y, denoise(x, t), t)
    return x


def test_pf_ode_from_noisy_lr_reaches_the_single_hr_point():
    # One-point data distribution p(x0 | y) = delta(x0): D(x_t, t) = x0, and the PF-ODE started
    # at the noisy LR image y + sigma_max eps must land on x0 (curved schedules: Euler is inexact).
    process = CTMSRProcess(sigma_max=1.0, rho_noise=2.0, rho_shift=2.0)
    x0, y, eps = _randn(), _randn(), _randn()
    x1 = process.add_noise(x0, y, eps, _full(1.0))
    assert_close(x1, y + eps)
    out = _euler(process, x1, y, lambda x, t: x0, steps=2000)
    assert_close(out, x0, atol=2e-3, rtol=0)
    coarse = _euler(process, x1, y, lambda x, t: x0, steps=20)
    assert (coarse - x0).abs().max() > (out - x0).abs().max()  # it converges, not trivially exact


def test_pf_ode_transports_noisy_lr_onto_a_gaussian_posterior():
    # p(x0 | y) = N(m, v) per dim: the PF-ODE is affine and maps y + s_max z to m + sqrt(v) z.
    process = CTMSRProcess(sigma_max=0.8, rho_noise=1.0, rho_shift=1.0)
    m, v = _randn(), torch.rand(SHAPE, dtype=F64) + 0.2
    y = _randn()

    def posterior_mean(x, t):  # E[x0 | x_t, y]: Gaussian conditioning
        a, s = _per_sample(process.shift(t)), _per_sample(process.sigma(t))
        mean_t = (1 - a) * m + a * y
        var_t = (1 - a) ** 2 * v + s**2
        return m + (1 - a) * v / var_t * (x - mean_t)

    z = _randn()
    out = _euler(process, y + process.sigma_max * z, y, posterior_mean, steps=4000)
    assert_close(out, m + v.sqrt() * z, atol=2e-3, rtol=0)


def test_process_rejects_bad_settings():
    with pytest.raises(ValueError, match="sigma_min"):
        CTMSRProcess(sigma_max=1.0, sigma_min=1.0)
    with pytest.raises(ValueError, match="rho"):
        CTMSRProcess(rho_noise=0.0)
    with pytest.raises(ValueError, match=r"\[B\]"):
        CTMSRProcess().add_noise(_randn(), _randn(), _randn(), _full(0.5, n=2))


# ------------------------------------------------------------------------------------------
# Consistency parametrisation, grid, CT pair and loss


def test_boundary_condition_holds_exactly():
    process = CTMSRProcess()
    x_t, F = _randn(), _randn()
    assert torch.equal(ctmsr_consistency(x_t, F, _full(0.0), process), x_t)
    shifted = CTMSRProcess(sigma_min=0.02, rho_noise=7.0)
    assert torch.equal(ctmsr_consistency(x_t, F, _full(0.0), shifted), x_t)
    x32, F32 = x_t.float(), F.float()
    assert torch.equal(ctmsr_consistency(x32, F32, torch.zeros(SHAPE[0]), process), x32)


def test_consistency_scalings_match_the_official_formula():
    process = CTMSRProcess()
    x_t, F = _randn(), _randn()
    t = torch.rand(SHAPE[0], dtype=F64) * 0.9 + 0.1
    r = _per_sample(process.sigma(t)) / 0.1
    c_skip = 0.25 / (r**2 + 0.25)
    c_out = r / (r**2 + 0.25).sqrt()
    assert_close(ctmsr_consistency(x_t, F, t, process), c_skip * x_t + c_out * F)
    # At the LR end the output is (almost) the network's: c_skip = 0.25 / 100.25.
    out = ctmsr_consistency(x_t, F, _full(1.0), process)
    assert (out - F).abs().max() < 0.01 * (x_t.abs().max() + F.abs().max())


def test_time_grid_and_curriculum():
    assert_close(ctmsr_time_grid(5), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=F64))
    # Official s0 = 4, s1 = 3: 5 points for the first half of training, then 4.
    assert [ctmsr_num_points(k, 100) for k in (0, 49, 50, 99, 500)] == [5, 5, 4, 4, 4]
    assert [ctmsr_num_points(k, 90, s0=2, s1=4) for k in (0, 29, 30, 60, 89)] == [3, 3, 4, 5, 5]
    assert ctmsr_num_points(7, 10, s0=3, s1=3) == 4
    with pytest.raises(ValueError, match="at least 2"):
        ctmsr_time_grid(1)


def test_ct_pair_shares_noise():
    process = CTMSRProcess(sigma_max=1.0, rho_noise=2.0)
    x0, y, eps = _randn(), _randn(), _randn()
    t_cur, t_next = _full(0.25), _full(0.5)
    x_next, x_cur = ctmsr_ct_pair(x0, y, eps, t_cur, t_next, process)
    da = process.shift(t_next) - process.shift(t_cur)
    ds = process.sigma(t_next) - process.sigma(t_cur)
    assert_close(x_next - x_cur, _per_sample(da) * (y - x0) + _per_sample(ds) * eps)
    assert torch.equal(ctmsr_ct_pair(x0, y, eps, _full(0.0), t_next, process)[1], x0)
    with pytest.raises(ValueError, match="t_next > t_cur"):
        ctmsr_ct_pair(x0, y, eps, t_next, t_cur, process)


def test_ct_loss_gradients_match_closed_forms():
    online, target = _randn(), _randn()
    w = torch.rand(SHAPE[0], dtype=F64)
    diff = online - target
    g_on, g_tg = grad_of(lambda a, b: ctmsr_ct_loss(a, b, "l2", weight=w), online, target)
    assert_close(g_on, _per_sample(w) * 2 * diff / NUMEL)
    assert_close(g_tg, torch.zeros_like(target))  # stop-gradient on the target network
    eps = 1e-4
    g_on, g_tg = grad_of(lambda a, b: ctmsr_ct_loss(a, b, "charbonnier", c=eps), online, target)
    assert_close(g_on, diff / (diff.square() + eps).sqrt() / NUMEL)
    assert_close(g_tg, torch.zeros_like(target))
    c = 0.3
    g_on, _ = grad_of(lambda a, b: ctmsr_ct_loss(a, b, "pseudo_huber", c=c), online, target)
    norm = _per_sample(diff.flatten(1).square().sum(1))
    assert_close(g_on, diff / (norm + c * c).sqrt())
    assert_close(
        ctmsr_ct_loss(online, target, "pseudo_huber", c=c), pseudo_huber(online, target, c)
    )
    assert_close(ctmsr_ct_loss(online, target), charbonnier(online, target))
    with pytest.raises(ValueError, match="unknown CT distance"):
        ctmsr_ct_loss(online, target, "lpips")


# ------------------------------------------------------------------------------------------
# Distribution Trajectory Matching


def test_dtm_gradient_is_weighted_trajectory_difference():
    x, fake, real, hr = _randn(), _randn(), _randn(), _randn()
    extra = torch.rand(SHAPE[0], dtype=F64)
    gx, gfake, greal, ghr = grad_of(lambda *a: dtm_loss(*a, weight=extra), x, fake, real, hr)
    w = 1.0 / ((x - hr).abs().mean(dim=(1, 2, 3)) + 1e-6)
    assert_close(gx, _per_sample(extra * w) * (fake - real) / NUMEL)
    for g in (gfake, greal, ghr):  # the frozen model's predictions and the weight are constants
        assert_close(g, torch.zeros_like(g))
    assert_close(dtm_weight(x, hr), w)
    (g_simple,) = grad_of(lambda x: dtm_loss(x, fake, real), x)
    assert_close(g_simple, (fake - real) / NUMEL)


def test_dtm_loss_is_half_weighted_mse_to_its_target():
    x, fake, real, hr = _randn(), _randn(), _randn(), _randn()
    w = dtm_weight(x, hr)
    target = dtm_target(x, fake, real)
    expected = 0.5 * w * (x - target).square().mean(dim=(1, 2, 3))
    assert_close(dtm_loss(x, fake, real, hr), expected)
    x_req = x.clone().requires_grad_(True)
    assert not dtm_target(x_req, fake, real, scale=w).requires_grad
    assert_close(dtm_target(x, fake, real, scale=w), x - _per_sample(w) * (fake - real))


def test_dtm_descent_moves_output_toward_where_the_hr_trajectory_leads():
    x = torch.zeros(4, 2, requires_grad=True)
    real = torch.tensor([[1.0, 0.0]]).expand(4, 2)  # f(x_t): the HR trajectory maps here
    fake = x.detach().clone()  # f(z_t): the SR trajectory maps back onto the SR result
    dtm_loss(x, fake, real).sum().backward()
    assert x.grad is not None
    step = -x.grad
    assert bool((step[:, 0] > 0).all()) and bool((step[:, 1] == 0).all())


def test_dtm_inputs_share_noise_and_stop_the_student_gradient():
    process = CTMSRProcess()
    x0_student = _randn().requires_grad_(True)
    hr, y, eps = _randn(), _randn(), _randn()
    t = _full(0.3)
    z_t, x_t = dtm_inputs(x0_student, hr, y, eps, t, process)
    assert not z_t.requires_grad
    assert_close(z_t - x_t, (1 - 0.3) * (x0_student.detach() - hr))


def test_dtm_vanishes_at_the_hr_image():
    # If the SR result is the HR image, both trajectory points coincide: zero gradient for any f.
    process, net = CTMSRProcess(), TinyMLP(dim=6, hidden=16).double()
    hr, y, eps = _randn(8, 6), _randn(8, 6), _randn(8, 6)
    t = _full(0.3, n=8)
    z_t, x_t = dtm_inputs(hr, hr, y, eps, t, process)
    with torch.no_grad():
        fake = ctmsr_consistency(z_t, net(z_t, t), t, process)
        real = ctmsr_consistency(x_t, net(x_t, t), t, process)
    (g,) = grad_of(lambda x: dtm_loss(x, fake, real), hr)
    assert torch.equal(g, torch.zeros_like(g))


# ------------------------------------------------------------------------------------------
# A tiny SR problem: HR in R^4 from a Gaussian mixture, LR = a fixed averaging projection.


def _sr_problem(n, generator):
    avg = torch.full((2, 2), 0.5)
    down_up = torch.block_diag(avg, avg)  # "downsample then upsample": pairwise means
    signs = torch.randint(0, 2, (n, 2), generator=generator) * 2.0 - 1.0
    means = torch.stack([2 * signs[:, 0], 0 * signs[:, 0], 0 * signs[:, 1], 2 * signs[:, 1]], 1)
    x0 = means + 0.1 * torch.randn(n, 4, generator=generator)
    return x0, x0 @ down_up.T


def _train_ct(steps, batch, hidden, distance="l2", lr=3e-3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    process = CTMSRProcess()  # official: sigma_max 1, rho 1
    net = TinyMLP(dim=4, hidden=hidden, time_embed=16, cond_dim=4)
    opt = torch.optim.Adam(net.parameters(), lr=lr)

    def f(x_t, t, y):
        return ctmsr_consistency(x_t, net(x_t, t, y), t, process)

    for k in range(steps):
        x0, y = _sr_problem(batch, gen)
        grid = ctmsr_time_grid(ctmsr_num_points(k, steps)).float()
        n = torch.randint(0, grid.numel() - 1, (batch,), generator=gen)
        t_cur, t_next = grid[n], grid[n + 1]
        eps = torch.randn(batch, 4, generator=gen)
        x_next, x_cur = ctmsr_ct_pair(x0, y, eps, t_cur, t_next, process)
        with torch.no_grad():  # theta^- = theta, stop-gradient (official target network)
            target = f(x_cur, t_cur, y)
        loss = ctmsr_ct_loss(f(x_next, t_next, y), target, distance).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    x0, y = _sr_problem(2048, gen)
    x1 = y + process.sigma_max * torch.randn(2048, 4, generator=gen)  # noisy LR, t = 1
    with torch.no_grad():
        one_step = f(x1, torch.ones(2048), y)
    return (one_step - x0).square().mean().item(), (y - x0).square().mean().item()


@pytest.mark.parametrize(
    ("distance", "lr", "bound"),
    # Charbonnier (official eps 1e-12) is a smooth L1: constant-size steps want a smaller lr.
    [("l2", 3e-3, 0.05), ("charbonnier", 3e-4, 0.25)],
)
def test_ct_learns_one_step_sr(distance, lr, bound):
    # The HR residual is (almost) determined by the LR here (component std 0.1): one step of the
    # CT-trained student from the noisy LR must beat returning the LR itself ("bicubic") by far;
    # the untrained student is twice as bad as bicubic.
    err, bicubic = _train_ct(steps=400, batch=256, hidden=64, distance=distance, lr=lr)
    assert err < bound * bicubic, (err, bicubic)

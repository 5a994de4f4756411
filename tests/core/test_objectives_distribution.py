import math

import pytest
import torch
from torch.testing import assert_close

from onestep.core import noise
from onestep.core.data import GaussianMixture
from onestep.core.objectives import (
    FDIVERGENCES,
    dmd_loss,
    dmd_normalizer,
    dsm_weight,
    fdiv_weight,
    sid_loss,
    sim_loss,
    tdm_loss,
    tdm_times,
    vsd_loss,
)
from onestep.core.testing import grad_of

SHAPE = (5, 3, 4, 2)  # rank-4 on purpose: reductions must cover every non-batch dim
NUMEL = 3 * 4 * 2


def _triple(dtype=torch.float64):
    return tuple(torch.randn(SHAPE, dtype=dtype) for _ in range(3))


def _per_sample(v):
    return v.reshape(-1, *([1] * (len(SHAPE) - 1)))


def test_dmd_gradient_is_normalised_fake_minus_real():
    x, real, fake = _triple()
    gx, greal, gfake = grad_of(dmd_loss, x, real, fake)
    norm = (x - real).abs().mean(dim=(1, 2, 3)) + 1e-6
    assert_close(gx, (fake - real) / _per_sample(norm) / NUMEL)
    assert_close(greal, torch.zeros_like(real))  # teacher and fake score are constants here
    assert_close(gfake, torch.zeros_like(fake))


def test_dmd_weight_scales_gradient_and_loss_value():
    x, real, fake = _triple()
    w = torch.rand(SHAPE[0], dtype=torch.float64)
    (gx,) = grad_of(lambda x: dmd_loss(x, real, fake, weight=w), x)
    (g1,) = grad_of(lambda x: dmd_loss(x, real, fake), x)
    assert_close(gx, _per_sample(w) * g1)
    grad = (fake - real) * _per_sample(dmd_normalizer(x, real))
    assert_close(dmd_loss(x, real, fake), 0.5 * grad.square().mean(dim=(1, 2, 3)))


def test_dmd_descent_moves_sample_toward_teacher():
    x = torch.zeros(4, 2, requires_grad=True)
    real = torch.tensor([[1.0, 0.0]]).expand(4, 2)
    fake = x.detach().clone()  # fake score sits on the samples: only the teacher pulls
    dmd_loss(x, real, fake).sum().backward()
    assert x.grad is not None
    step = -x.grad
    assert bool((step[:, 0] > 0).all()) and bool((step[:, 1] == 0).all())


def test_vsd_gradient_is_weighted_difference():
    x, real, fake = _triple()
    w = torch.rand(SHAPE[0], dtype=torch.float64)
    gx, greal, gfake = grad_of(lambda *a: vsd_loss(*a, weight=w), x, real, fake)
    assert_close(gx, _per_sample(w) * (fake - real) / NUMEL)
    assert_close(greal, torch.zeros_like(real))
    assert_close(gfake, torch.zeros_like(fake))


def test_vsd_snr_weight_is_exact_kl_gradient():
    # KL gradient w.r.t. x: (s_fake - s_real)(x_t) * dx_t/dx with s = -(x_t - a x0) / s^2.
    x, real, fake = _triple()
    a, s = 0.8, 0.6
    s_real, s_fake = a * real / s**2, a * fake / s**2  # the x_t terms cancel in the difference
    kl_grad = (s_fake - s_real) * a
    w = torch.full((SHAPE[0],), (a / s) ** 2, dtype=torch.float64)
    (gx,) = grad_of(lambda x: vsd_loss(x, real, fake, w), x)
    assert_close(gx * NUMEL, kl_grad)


@pytest.mark.parametrize("alpha", [1.0, 1.2, 0.5])
def test_sid_gradient_closed_form(alpha):
    x, real, fake = _triple()
    w = torch.rand(SHAPE[0], dtype=torch.float64)
    gx, greal, gfake = grad_of(lambda *a: sid_loss(*a, alpha=alpha, weight=w), x, real, fake)
    u, v, wb = real - fake, fake - x, _per_sample(w)
    d_u = wb * (2 * (1 - alpha) * u + v) / NUMEL  # dL/du with u = real - fake
    d_v = wb * u / NUMEL  # dL/dv with v = fake - x
    assert_close(gx, -d_v)
    assert_close(greal, d_u)
    assert_close(gfake, -d_u + d_v)


def test_sid_matches_authors_form():
    x, real, fake = _triple()
    alpha = 1.2
    authors = (real - fake) * ((real - x) - alpha * (real - fake))
    assert_close(sid_loss(x, real, fake, alpha), authors.mean(dim=(1, 2, 3)))


@pytest.mark.parametrize("c", [0.1, 1.0, 7.0])
def test_sim_gradient_closed_form(c):
    x, real, fake = _triple()
    w = torch.rand(SHAPE[0], dtype=torch.float64)
    gx, greal, gfake = grad_of(lambda *a: sim_loss(*a, c=c, weight=w), x, real, fake)
    u, v, wb = real - fake, fake - x, _per_sample(w)
    big_s = _per_sample(torch.sqrt(u.square().mean(dim=(1, 2, 3)) + c**2))
    p = _per_sample((u * v).mean(dim=(1, 2, 3)))
    d_u = wb * (v / (NUMEL * big_s) - p * u / (NUMEL * big_s**3))
    d_v = wb * u / (NUMEL * big_s)
    assert_close(gx, -d_v)
    assert_close(greal, d_u)
    assert_close(gfake, -d_u + d_v)


def test_sim_large_c_tends_to_sid_alpha_one():
    x, real, fake = _triple()
    c = 1e4
    assert_close(
        sim_loss(x, real, fake, c=c) * c, sid_loss(x, real, fake, alpha=1.0), rtol=1e-6, atol=1e-8
    )
    with pytest.raises(ValueError, match="c > 0"):
        sim_loss(x, real, fake, c=0.0)


F_OF_R = {
    "rkl": lambda r: -torch.log(r),
    "fkl": lambda r: r * torch.log(r),
    "js": lambda r: r * torch.log(r) - (r + 1) * torch.log((r + 1) / 2),
    "sh": lambda r: (torch.sqrt(r) - 1) ** 2,
    "jf": lambda r: (r - 1) * torch.log(r),
}


@pytest.mark.parametrize("divergence", FDIVERGENCES)
def test_fdiv_weight_is_r2_fpp(divergence):
    log_r = torch.linspace(-3, 3, 13, dtype=torch.float64)
    r = log_r.exp().requires_grad_(True)
    (d1,) = torch.autograd.grad(F_OF_R[divergence](r).sum(), r, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), r)
    expected = r.detach() ** 2 * d2
    assert_close(fdiv_weight(log_r, divergence, normalize=False), expected)
    h = fdiv_weight(log_r, divergence)
    assert_close(h, expected / expected.mean())
    assert_close(h.mean(), torch.tensor(1.0, dtype=torch.float64))


def test_fdiv_weight_detached_clamped_and_validated():
    log_r = torch.tensor([-50.0, 0.0, 50.0], requires_grad=True)
    h = fdiv_weight(log_r, "fkl", normalize=False, log_ratio_range=(-2.0, 2.0))
    assert not h.requires_grad
    assert_close(h, torch.tensor([math.exp(-2), 1.0, math.exp(2)]))
    with pytest.raises(ValueError, match="unknown f-divergence 'kl'"):
        fdiv_weight(log_r, "kl")
    with pytest.raises(ValueError, match=r"log_ratio must be \[B\]"):
        fdiv_weight(log_r[None], "js")


def test_rkl_weight_leaves_dmd_unchanged_and_fkl_reweights():
    x, real, fake = _triple()
    log_r = torch.randn(SHAPE[0], dtype=torch.float64)
    assert_close(dmd_loss(x, real, fake, weight=fdiv_weight(log_r, "rkl")), dmd_loss(x, real, fake))
    w = fdiv_weight(log_r, "fkl")
    assert_close(dmd_loss(x, real, fake, weight=w), dmd_loss(x, real, fake) * w)


def test_shape_errors():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="one shape"):
        dmd_loss(x, torch.zeros(3, 3), x)
    with pytest.raises(ValueError, match="weight must have shape"):
        vsd_loss(x, x, x, weight=torch.ones(2))


def test_tdm_times_lie_in_each_steps_interval():
    schedule = [1.0, 0.7, 0.3, 0.0]
    t = tdm_times(schedule, 200, generator=torch.Generator().manual_seed(1))
    assert t.shape == (3, 200)
    for k in range(3):
        assert bool((t[k] >= schedule[k + 1]).all() and (t[k] <= schedule[k]).all())
        # the draws spread over the interval, not a single point
        assert float(t[k].max() - t[k].min()) > 0.8 * (schedule[k] - schedule[k + 1])
    again = tdm_times(schedule, 200, generator=torch.Generator().manual_seed(1))
    assert_close(t, again)
    with pytest.raises(ValueError, match="strictly decreasing"):
        tdm_times([0.0, 0.5, 1.0], 4)
    with pytest.raises(ValueError, match="K \\+ 1 boundary times"):
        tdm_times([1.0], 4)


def test_tdm_loss_is_weighted_sum_of_step_losses():
    k = 3
    xs, reals, fakes = (torch.randn(k, *SHAPE, dtype=torch.float64) for _ in range(3))
    w = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    loss = tdm_loss(xs, reals, fakes, w)
    expected = sum(w[i] * dmd_loss(xs[i], reals[i], fakes[i]) for i in range(k))
    assert_close(loss, expected)
    assert_close(tdm_loss(list(xs), list(reals), list(fakes), w), loss)  # list == stacked
    # default: mean over steps; normalize=False is the VSD direction per step
    assert_close(
        tdm_loss(xs, reals, fakes),
        sum(dmd_loss(*a) for a in zip(xs, reals, fakes, strict=True)) / k,
    )
    vsd = sum(vsd_loss(*a) for a in zip(xs, reals, fakes, strict=True)) / k
    assert_close(tdm_loss(xs, reals, fakes, normalize=False), vsd)


def test_tdm_gradient_per_step():
    k = 2
    xs, reals, fakes = (torch.randn(k, *SHAPE, dtype=torch.float64) for _ in range(3))
    w = torch.rand(k, SHAPE[0], dtype=torch.float64)  # per-step, per-sample weights
    gx, greal, gfake = grad_of(lambda *a: tdm_loss(*a, step_weights=w), xs, reals, fakes)
    for i in range(k):
        norm = _per_sample((xs[i] - reals[i]).abs().mean(dim=(1, 2, 3)) + 1e-6)
        assert_close(gx[i], _per_sample(w[i]) * (fakes[i] - reals[i]) / norm / NUMEL)
    assert_close(greal, torch.zeros_like(greal))
    assert_close(gfake, torch.zeros_like(gfake))
    with pytest.raises(ValueError, match="step_weights must be"):
        tdm_loss(xs, reals, fakes, torch.ones(3))
    with pytest.raises(ValueError, match="share one shape"):
        tdm_loss(xs, reals[:1], fakes)


def _particle_step(kind, x, teacher, fake, process, gen):
    """One gradient step of particles x under an objective; returns the loss gradient."""
    t = noise.uniform(x.shape[0], t_min=0.05, t_max=0.95, generator=gen)
    eps = torch.randn(x.shape, generator=gen)
    if kind in ("dmd", "vsd"):  # the predictions are constants for these two
        with torch.no_grad():
            x_t = process.add_noise(x, eps, t)
            real, fake_x0 = teacher(x_t, t), fake(x_t, t)
        snr = dsm_weight(process, t, "eps").clamp(max=100.0)
        loss = dmd_loss(x, real, fake_x0) if kind == "dmd" else vsd_loss(x, real, fake_x0, snr)
    else:  # SiD / SIM: the gradient also flows through both networks' input x_t
        x_t = process.add_noise(x, eps, t)
        real, fake_x0 = teacher(x_t, t), fake(x_t, t)
        w = dmd_normalizer(x, real)
        loss = (sid_loss if kind == "sid" else sim_loss)(x, real, fake_x0, weight=w)
    (g,) = torch.autograd.grad(loss.sum(), x)
    return g


@pytest.mark.parametrize("kind", ["dmd", "vsd", "sid", "sim"])
def test_particles_converge_to_the_analytic_teacher(kind):
    # Particles x follow -grad of the objective; the teacher is the exact denoiser of
    # N((2, 0), 0.3^2) and the fake score the exact denoiser of the particles blurred by a
    # 0.1-std kernel: the fixed point is particles of spread sqrt(0.3^2 - 0.1^2) ~ 0.28 at (2, 0).
    gen = torch.Generator().manual_seed(0)
    process = noise.flow()
    teacher = GaussianMixture(torch.tensor([[2.0, 0.0]]), std=0.3).denoiser(process)
    x = 0.3 * torch.randn(256, 2, generator=gen)
    for _ in range(150):
        fake = GaussianMixture(x.detach().clone(), std=0.1).denoiser(process)
        x = x.detach().requires_grad_(True)
        x = x - 0.1 * _particle_step(kind, x, teacher, fake, process, gen)
    x = x.detach()
    assert_close(x.mean(0), torch.tensor([2.0, 0.0]), atol=0.05, rtol=0)
    assert_close(x.std(0), torch.full((2,), 0.283), atol=0.04, rtol=0)

"""TAD-SR objectives: HFSD gradient and its unbiasedness, shared-noise perturbation, the
time-aware discriminator's hinge losses, time grids."""

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from onestep.core import noise
from onestep.core.denoiser import from_x0
from onestep.core.testing import TinyMLP, grad_of
from onestep.sr.objectives import (
    TADSR_TIMES,
    CTMSRProcess,
    tadsr_discriminator_loss,
    tadsr_distill_loss,
    tadsr_eps_from_x0,
    tadsr_generator_loss,
    tadsr_hfsd_loss,
    tadsr_noised_pair,
    tadsr_time_grid,
)

SHAPE = (5, 3, 4, 2)
NUMEL = 3 * 4 * 2
F64 = torch.float64


def _randn(*shape):
    return torch.randn(*(shape or SHAPE), dtype=F64)


def _per_sample(v):
    return v.reshape(-1, *([1] * (len(SHAPE) - 1)))


def test_hfsd_gradient_is_weighted_eps_difference():
    x, eps_fake, eps_real = _randn(), _randn(), _randn()
    w = torch.rand(SHAPE[0], dtype=F64)
    gx, gf, gr = grad_of(lambda *a: tadsr_hfsd_loss(*a, weight=w), x, eps_fake, eps_real)
    assert_close(gx, _per_sample(w) * (eps_fake - eps_real) / NUMEL)
    assert_close(gf, torch.zeros_like(gf))  # the frozen teacher's predictions are constants
    assert_close(gr, torch.zeros_like(gr))
    # Same gradient as the official linear form mean(sg(g) * x), a non-negative value.
    (g_official,) = grad_of(lambda x: ((eps_fake - eps_real) * x).mean(dim=(1, 2, 3)), x)
    assert bool((tadsr_hfsd_loss(x, eps_fake, eps_real) >= 0).all())
    assert_close(grad_of(lambda x: tadsr_hfsd_loss(x, eps_fake, eps_real), x)[0], g_official)


def test_noised_pair_shares_noise_and_keeps_the_student_graph():
    x0_fake, x0_real, eps, y = _randn(), _randn(), _randn(), _randn()
    alpha, sigma = torch.rand(SHAPE[0], dtype=F64), torch.rand(SHAPE[0], dtype=F64) + 0.1
    offset = 0.3 * y
    x_fake, x_real = tadsr_noised_pair(x0_fake, x0_real, eps, alpha, sigma, offset)
    assert_close(x_fake - x_real, _per_sample(alpha) * (x0_fake - x0_real))
    assert_close(x_real, _per_sample(alpha) * x0_real + _per_sample(sigma) * eps + offset)
    # The discriminator input of the generator step must carry the student's gradient.
    gf, gr = grad_of(lambda a, b: tadsr_noised_pair(a, b, eps, alpha, sigma)[0], x0_fake, x0_real)
    assert_close(gf, _per_sample(alpha).expand(SHAPE))
    assert_close(gr, torch.zeros_like(gr))
    with pytest.raises(ValueError, match=r"\[B\]"):
        tadsr_noised_pair(x0_fake, x0_real, eps, torch.ones(2, dtype=F64), 1.0)


def test_noised_pair_matches_core_and_ctmsr_processes():
    x0_fake, x0_real, eps, y = _randn(), _randn(), _randn(), _randn()
    t = torch.rand(SHAPE[0], dtype=F64) * 0.8 + 0.1
    vp = noise.vp(schedule="scaled_linear")
    x_fake, x_real = tadsr_noised_pair(x0_fake, x0_real, eps, vp.alpha(t), vp.sigma(t))
    assert_close(x_fake, vp.add_noise(x0_fake, eps, t))
    assert_close(x_real, vp.add_noise(x0_real, eps, t))
    lr = CTMSRProcess(sigma_max=2.0)  # the residual-shift family of ResShift teachers
    x_fake, _ = tadsr_noised_pair(x0_fake, x0_real, eps, lr.alpha(t), lr.sigma(t), lr.offset(t, y))
    assert_close(x_fake, lr.add_noise(x0_fake, y, eps, t))


def test_eps_from_x0_inverts_the_perturbation():
    x0, eps, y = _randn(), _randn(), _randn()
    t = torch.rand(SHAPE[0], dtype=F64) * 0.8 + 0.1
    lr = CTMSRProcess()
    x_t = lr.add_noise(x0, y, eps, t)
    assert_close(tadsr_eps_from_x0(x_t, x0, lr.alpha(t), lr.sigma(t), lr.offset(t, y)), eps)
    vp = noise.vp(schedule="scaled_linear")
    x_t = vp.add_noise(x0, eps, t)
    x0_hat = _randn()
    assert_close(
        tadsr_eps_from_x0(x_t, x0_hat, vp.alpha(t), vp.sigma(t)),
        from_x0(x0_hat, "eps", x_t, t, vp),
    )


def _hfsd_grad(x0_student, x0_ref, eps, t, y, teacher, process):
    """One HFSD gradient the way a method computes it (teacher frozen, under no_grad)."""
    alpha, sigma, offset = process.alpha(t), process.sigma(t), process.offset(t, y)
    with torch.no_grad():
        x_fake, x_real = tadsr_noised_pair(x0_student, x0_ref, eps, alpha, sigma, offset)
        d_fake, d_real = teacher(x_fake, t), teacher(x_real, t)
        eps_fake = tadsr_eps_from_x0(x_fake, d_fake, alpha, sigma, offset)
        eps_real = tadsr_eps_from_x0(x_real, d_real, alpha, sigma, offset)
    (g,) = grad_of(lambda x: tadsr_hfsd_loss(x, eps_fake, eps_real), x0_student)
    return g, (d_fake, d_real, alpha, sigma)


def test_hfsd_in_x0_terms_and_zero_at_the_reference():
    # eps_fake - eps_real = (alpha / sigma) ((x_student - x_ref) - (D_fake - D_real)): no bias.
    process, net = CTMSRProcess(), TinyMLP(dim=6, hidden=16).double()
    x0_student, x0_ref, eps, y = _randn(8, 6), _randn(8, 6), _randn(8, 6), _randn(8, 6)
    t = torch.full((8,), 2 / 14, dtype=F64)
    g, (d_fake, d_real, alpha, sigma) = _hfsd_grad(x0_student, x0_ref, eps, t, y, net, process)
    ratio = (alpha / sigma).reshape(-1, 1)
    assert_close(g, ratio * ((x0_student - x0_ref) - (d_fake - d_real)) / 6)
    g_ref, _ = _hfsd_grad(x0_ref, x0_ref, eps, t, y, net, process)
    assert torch.equal(g_ref, torch.zeros_like(g_ref))
    # SDS's eps_phi(x_t_fake) - eps does not vanish there: the bias HFSD removes.
    with torch.no_grad():
        x_fake, _ = tadsr_noised_pair(x0_ref, x0_ref, eps, alpha, sigma, process.offset(t, y))
        eps_hat = tadsr_eps_from_x0(x_fake, net(x_fake, t), alpha, sigma, process.offset(t, y))
    assert (eps_hat - eps).abs().max() > 1e-3


def test_hfsd_descent_moves_student_toward_reference_for_an_exact_teacher():
    # Teacher = exact denoiser of a one-point distribution at x_ref: D(x) = x_ref everywhere.
    process = CTMSRProcess()
    x0_ref, y, eps = _randn(8, 6), _randn(8, 6), _randn(8, 6)
    x0_student = x0_ref + _randn(8, 6)
    t = torch.full((8,), 0.1, dtype=F64)
    g, _ = _hfsd_grad(x0_student, x0_ref, eps, t, y, lambda x, t: x0_ref, process)
    step = -g
    assert ((step * (x0_ref - x0_student)).sum(1) > 0).all()


def test_distill_loss_is_mse_to_detached_teacher():
    x, teacher = _randn(), _randn()
    w = torch.rand(SHAPE[0], dtype=F64)
    gx, gt = grad_of(lambda a, b: tadsr_distill_loss(a, b, w), x, teacher)
    assert_close(gx, _per_sample(w) * 2 * (x - teacher) / NUMEL)
    assert_close(gt, torch.zeros_like(gt))


def test_adversarial_losses_are_the_official_hinge():
    real, fake = _randn(6, 5), _randn(6, 5)  # multi-head logits concatenated along dim 1
    d = tadsr_discriminator_loss(real, fake)
    assert_close(d, F.relu(1 - real).mean(1) + F.relu(1 + fake).mean(1))
    gr, gf = grad_of(tadsr_discriminator_loss, real, fake)
    assert_close(gr, -(real < 1).to(F64) / 5)
    assert_close(gf, (fake > -1).to(F64) / 5)
    assert_close(tadsr_generator_loss(fake, 0.02), -0.02 * fake.mean(1))
    (gg,) = grad_of(lambda f: tadsr_generator_loss(f, 0.02), fake)
    assert_close(gg, torch.full_like(fake, -0.02 / 5))


def test_time_grids():
    assert_close(tadsr_time_grid(*TADSR_TIMES["resshift_hfsd"]), torch.tensor([0, 1, 2]) / 14.0)
    assert tadsr_time_grid(*TADSR_TIMES["resshift_discriminator"]).numel() == 14
    sd = tadsr_time_grid(*TADSR_TIMES["sd_hfsd"]) * 999
    assert_close(sd, torch.arange(20, 900, 20, dtype=torch.float32))
    draw = noise.discrete(4, tadsr_time_grid(15, 0, 3))
    assert bool((draw <= 2 / 14 + 1e-7).all())
    with pytest.raises(ValueError, match="start < stop"):
        tadsr_time_grid(15, 3, 3)

import math

import pytest
import torch
from torch.testing import assert_close

from onestep.core.data.gmm import GaussianMixture, GMMDenoiser
from onestep.core.denoiser import Guided
from onestep.core.noise import edm, flow, trig, vp
from onestep.core.testing import (
    TinyMLP,
    assert_params_changed,
    assert_params_unchanged,
    gmm_teacher,
    grad_of,
    snapshot_params,
    tiny_denoiser,
)

PROCESSES = {"vp": vp(), "vp-linear": vp(schedule="linear"), "flow": flow(), "edm": edm()}


def _mixed(dim: int = 2) -> GaussianMixture:
    """Unequal weights and stds, so the per-component gain and the prior both matter."""
    means = torch.tensor([[-1.0, 0.5, 0.0], [1.0, 1.0, 0.5], [0.0, -1.5, -0.5]])[:, :dim]
    return GaussianMixture(means, torch.tensor([0.3, 0.5, 0.2]), torch.tensor([0.5, 0.3, 0.2]))


# -- the analytic teacher -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vp", "flow", "edm"])
@pytest.mark.parametrize("dim", [2, 3])
def test_teacher_matches_self_normalised_importance_sampling(name, dim):
    process = PROCESSES[name]
    gmm = _mixed(dim).to(dtype=torch.float64)
    teacher = gmm.denoiser(process)
    gen = torch.Generator().manual_seed(1)
    t = torch.tensor([0.25, 0.5, 0.8], dtype=torch.float64)
    x_t = process.add_noise(
        gmm.sample(3, gen), torch.randn(3, dim, generator=gen, dtype=torch.float64), t
    )

    # Self-normalised IS: E[x0 | x_t] = sum_i w_i x0_i / sum_i w_i, x0_i ~ p,
    # w_i = N(x_t; alpha x0_i, sigma^2 I).
    x0 = gmm.sample(400_000, gen)
    alpha, sigma = process.alpha(t), process.sigma(t)
    sq = (x_t[:, None, :] - alpha[:, None, None] * x0[None]).pow(2).sum(-1)  # (3, N)
    w = torch.softmax(-0.5 * sq / sigma[:, None] ** 2, dim=1)
    mc = w @ x0
    ess = 1 / w.pow(2).sum(1)
    assert bool((ess > 2000).all()), f"too few effective samples for a tight check: {ess}"

    exact = teacher(x_t, t)
    assert_close(exact, mc, atol=0.01, rtol=0)
    # The check is tight enough to see the within-component term of E[x0 | x_t, k].
    r = teacher.posterior(x_t, t)
    means_only = r @ gmm.means
    assert (means_only - mc).abs().max() > 0.03


@pytest.mark.parametrize("name", ["vp", "vp-linear", "flow", "edm", "trig"])
def test_score_is_gradient_of_noised_log_density(name):
    process = trig() if name == "trig" else PROCESSES[name]
    gmm = _mixed().to(dtype=torch.float64)
    teacher = gmm.denoiser(process)
    t = torch.tensor([0.01, 0.1, 0.4, 0.7, 0.95], dtype=torch.float64)
    x_t = process.add_noise(gmm.sample(5), torch.randn(5, 2, dtype=torch.float64), t)
    (autograd,) = grad_of(lambda x: teacher.log_prob(x, t), x_t)
    assert_close(teacher.score(x_t, t), autograd, rtol=1e-7, atol=1e-7)


def test_noised_log_density_matches_independent_mixture():
    gmm = _mixed().to(dtype=torch.float64)
    process = flow()
    teacher = gmm.denoiser(process)
    t = torch.tensor([0.0, 0.3, 0.9], dtype=torch.float64)
    x_t = torch.randn(3, 2, dtype=torch.float64)
    alpha, sigma = process.alpha(t), process.sigma(t)
    for b in range(3):
        std = torch.sqrt(alpha[b] ** 2 * gmm.stds**2 + sigma[b] ** 2)
        ref = torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(probs=gmm.weights),
            torch.distributions.Independent(
                torch.distributions.Normal(alpha[b] * gmm.means, std[:, None].expand(3, 2)), 1
            ),
        )
        assert_close(teacher.log_prob(x_t[b : b + 1], t[b : b + 1]), ref.log_prob(x_t[b : b + 1]))


def test_teacher_is_stable_for_tiny_sigma_and_matches_float64():
    gmm, _ = gmm_teacher("ring")
    process = vp()
    teacher32 = gmm.denoiser(process)
    teacher64 = gmm.to(dtype=torch.float64).denoiser(process)
    # Points far from every mode (between two ring modes, and the origin) at almost no noise:
    # the component likelihoods underflow in linear space, not in log space.
    x_t = torch.tensor([[0.0, 0.0], [2.0 * math.cos(math.pi / 8), 2.0 * math.sin(math.pi / 8)]])
    t = torch.full((2,), 1e-4)
    out32 = teacher32(x_t, t)
    out64 = teacher64(x_t.double(), t.double())
    assert bool(torch.isfinite(out32).all())
    assert out64.dtype == torch.float64
    assert_close(out32.double(), out64, atol=1e-4, rtol=0)
    # With sigma -> 0 the posterior mean tends to x_t itself.
    assert_close(out64, x_t.double() * process.alpha(t.double())[:, None] ** -1, atol=1e-3, rtol=0)
    # And at t = 1 on the cosine schedule (alpha = 0) it is the prior mean.
    t1 = torch.ones(2, dtype=torch.float64)
    assert_close(teacher64(x_t.double(), t1), (gmm.weights @ gmm.means).double().expand(2, 2))


def test_teacher_gradcheck_in_x_t():
    gmm = _mixed().to(dtype=torch.float64)
    teacher = gmm.denoiser(flow())
    x_t = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.1, 0.3, 0.6, 0.9], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: teacher(x, t), (x_t,))


def test_teacher_buffers_follow_module_dtype_and_accept_image_shapes():
    gmm = GaussianMixture(torch.randn(4, 6), 0.2)
    teacher = gmm.denoiser(flow())
    assert {n for n, _ in teacher.named_buffers()} == {"means", "stds", "weights"}
    teacher = teacher.to(torch.float64)
    assert teacher.means.dtype == torch.float64
    x_t = torch.randn(5, 1, 2, 3, dtype=torch.float64)  # [B, ...] with D = 6 elements
    t = torch.full((5,), 0.5, dtype=torch.float64)
    out = teacher(x_t, t)
    assert out.shape == x_t.shape
    assert_close(out.reshape(5, 6), teacher(x_t.reshape(5, 6), t))
    with pytest.raises(ValueError, match=r"\[B, 6\]"):
        teacher(torch.randn(5, 4), torch.full((5,), 0.5))


def test_derived_eps_and_velocity_are_consistent():
    gmm, teacher = gmm_teacher("ring", flow())
    x0_true = gmm.sample(8)
    eps_true = torch.randn(8, 2)
    t = torch.rand(8) * 0.8 + 0.1
    x_t = flow().add_noise(x0_true, eps_true, t)
    x0, eps = teacher(x_t, t), teacher.eps(x_t, t)
    assert_close(x_t, (1 - t)[:, None] * x0 + t[:, None] * eps)
    assert_close(teacher.velocity(x_t, t), eps - x0)


# -- class-conditional teacher ------------------------------------------------------------------


def test_label_cond_restricts_to_one_component():
    gmm = _mixed()
    teacher = gmm.denoiser(flow())
    x_t, t = torch.randn(6, 2), torch.full((6,), 0.5)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    for k in range(3):
        single = GaussianMixture(gmm.means[k : k + 1], gmm.stds[k : k + 1]).denoiser(flow())
        idx = labels == k
        assert_close(teacher(x_t, t, labels)[idx], single(x_t[idx], t[idx]))
        assert_close(teacher.log_prob(x_t, t, labels)[idx], single.log_prob(x_t[idx], t[idx]))
    # -1 is the null label: unconditional.
    assert_close(teacher(x_t, t, torch.tensor([-1])), teacher(x_t, t))
    assert not torch.allclose(teacher(x_t, t, labels), teacher(x_t, t))


def test_mask_cond_is_the_renormalised_sub_mixture():
    gmm = _mixed()
    teacher = gmm.denoiser(vp())
    x_t, t = torch.randn(4, 2), torch.full((4,), 0.4)
    mask = torch.tensor([True, False, True])
    sub = GaussianMixture(gmm.means[mask], gmm.stds[mask], gmm.weights[mask]).denoiser(vp())
    assert_close(teacher(x_t, t, mask), sub(x_t, t))
    assert_close(teacher.log_prob(x_t, t, mask), sub.log_prob(x_t, t))
    with pytest.raises(ValueError, match="at least one component"):
        teacher(x_t, t, torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"-1\.\.2"):
        teacher(x_t, t, torch.tensor([0, 1, 3, 0]))


def test_guided_class_conditional_teacher():
    gmm = _mixed()
    teacher = gmm.denoiser(flow())
    # Guided is annotated with Denoiser but only needs a DenoiserBase.
    guided = Guided(teacher, scale=3.0, uncond=torch.tensor([-1]))
    x_t, t = torch.randn(4, 2), torch.full((4,), 0.6)
    labels = torch.tensor([0, 1, 2, 1])
    x0_c, x0_u = teacher(x_t, t, labels), teacher(x_t, t)
    assert_close(guided(x_t, t, labels), x0_u + 3.0 * (x0_c - x0_u))


# -- the mixture itself -------------------------------------------------------------------------


def test_sample_statistics_match_weights_means_and_stds():
    gmm = GaussianMixture.unbalanced_ring(n_modes=4, std=torch.tensor(0.2).item(), ratio=8.0)
    gen = torch.Generator().manual_seed(3)
    n = 100_000
    x, k = gmm.sample_with_labels(n, gen)
    assert x.shape == (n, 2) and k.dtype == torch.long
    freq = torch.bincount(k, minlength=4).double() / n
    w = gmm.weights.double()
    assert_close(freq, w, atol=float(4 * (w * (1 - w) / n).sqrt().max()), rtol=0)
    for j in range(4):
        xs = x[k == j]
        assert_close(xs.mean(0), gmm.means[j], atol=0.02, rtol=0)
        assert_close(xs.std(0), torch.full((2,), 0.2), atol=0.01, rtol=0)
    assert_close(x.mean(0), w.float() @ gmm.means, atol=0.02, rtol=0)
    # The generator makes sampling reproducible.
    assert torch.equal(
        gmm.sample(10, torch.Generator().manual_seed(5)),
        gmm.sample(10, torch.Generator().manual_seed(5)),
    )


def test_log_prob_integrates_to_one():
    gmm = GaussianMixture.ring(n_modes=8, radius=2.0, std=0.1).to(dtype=torch.float64)
    h = 0.01
    axis = torch.arange(-3, 3, h, dtype=torch.float64) + h / 2
    gx, gy = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    mass = gmm.log_prob(grid).exp().sum() * h * h
    assert abs(float(mass) - 1) < 1e-4
    # 1-D mixture, and the density peaks at the modes.
    one_d = GaussianMixture(
        torch.tensor([[-1.0], [2.0]], dtype=torch.float64), torch.tensor([0.3, 0.5])
    )
    xs = torch.arange(-6, 8, 1e-3, dtype=torch.float64)[:, None]
    assert abs(float(one_d.log_prob(xs).exp().sum() * 1e-3) - 1) < 1e-6
    assert gmm.log_prob(gmm.means[:1]) > gmm.log_prob(torch.zeros(1, 2, dtype=torch.float64)) + 10


def test_presets():
    ring = GaussianMixture.ring(n_modes=6, radius=3.0, std=0.2)
    assert (ring.n_modes, ring.dim) == (6, 2)
    assert_close(ring.means.norm(dim=1), torch.full((6,), 3.0))
    grid = GaussianMixture.grid()
    assert grid.n_modes == 25
    assert_close(grid.means.mean(0), torch.zeros(2), atol=1e-6, rtol=0)
    assert sorted(set(grid.means[:, 0].tolist())) == [-2.0, -1.0, 0.0, 1.0, 2.0]
    unbalanced = GaussianMixture.unbalanced_ring(ratio=10.0)
    assert_close(unbalanced.weights.sum(), torch.tensor(1.0))
    assert_close(unbalanced.weights.max() / unbalanced.weights.min(), torch.tensor(10.0))
    for preset in ("ring", "grid", "unbalanced"):
        g, teacher = gmm_teacher(preset)
        assert isinstance(teacher, GMMDenoiser) and teacher.process.name == "flow"
        assert_close(teacher.mixture.means, g.means)
    with pytest.raises(ValueError, match="unknown GMM preset"):
        gmm_teacher("spiral")


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\[K, D\]"):
        GaussianMixture(torch.zeros(3))
    with pytest.raises(ValueError, match="> 0"):
        GaussianMixture(torch.zeros(2, 2), torch.tensor([0.1, -0.1]))
    with pytest.raises(ValueError, match=r"\[K\] = \[2\]"):
        GaussianMixture(torch.zeros(2, 2), 0.1, torch.ones(3))
    with pytest.raises(ValueError, match="zero-weight"):
        GaussianMixture(torch.zeros(2, 2), 0.1, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="NaN"):
        GaussianMixture(torch.tensor([[float("nan"), 0.0]]))


# -- onestep.core.testing helpers -------------------------------------------------------------


def test_tiny_mlp_and_denoiser():
    net = TinyMLP(2, cond_dim=3)
    assert sum(p.numel() for p in net.parameters()) < 10_000
    x, t = torch.randn(5, 2), torch.rand(5)
    out = net(x, t, torch.tensor([0, 1, 2, -1, 0]))
    assert out.shape == (5, 2)
    assert_close(net(x, t, torch.full((5,), -1)), net(x, t))  # -1 is the null label
    assert_close(net(x, t, torch.eye(3)[[0, 1, 2, 0, 0]])[:3], out[:3])
    assert not torch.allclose(net(x, t), net(x, t + 0.1))  # time enters
    with pytest.raises(ValueError, match="cond_dim=0"):
        TinyMLP(2)(x, t, torch.zeros(5, 1))
    den = tiny_denoiser(2, flow(), prediction="eps")
    assert den(x, t).shape == (5, 2) and den.prediction == "eps"


def test_grad_of_matches_the_analytic_gradient():
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    ga, gb = grad_of(lambda x, y: (x * y).pow(2).sum(1), a, b)
    assert_close(ga, 2 * a * b**2)
    assert_close(gb, 2 * b * a**2)
    assert not a.requires_grad  # inputs are left alone
    (gz,) = grad_of(lambda x, y: y.sum(1), a, b)[:1]
    assert torch.equal(gz, torch.zeros_like(a))


def test_param_snapshots_detect_changes():
    net = TinyMLP(2)
    snap = snapshot_params(net)
    assert_params_unchanged(net, snap)
    with pytest.raises(AssertionError, match="no parameter changed"):
        assert_params_changed(net, snap)
    with torch.no_grad():
        next(iter(net.parameters())).view(-1)[0] += 1e-6
    assert_params_changed(net, snap)
    with pytest.raises(AssertionError, match="1 tensors changed"):
        assert_params_unchanged(net, snap)

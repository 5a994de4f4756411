"""Noise processes: presets, boundary values, derivatives, inverses and time samplers."""

import math

import pytest
import torch
from diffusers import DDPMScheduler
from torch.testing import assert_close

from onestep.core import noise

PRESETS = {
    "vp-cosine": noise.vp(),
    "vp-linear": noise.vp(schedule="linear", beta_start=1e-4, beta_end=0.02),
    "vp-sd": noise.vp(schedule="scaled_linear"),
    "edm": noise.edm(),
    "flow": noise.flow(),
    "trig": noise.trig(0.5),
}
T = torch.linspace(0.01, 0.99, 37, dtype=torch.float64)


@pytest.mark.parametrize("name", ["vp-cosine", "vp-linear", "vp-sd"])
def test_vp_is_variance_preserving(name):
    p = PRESETS[name]
    assert_close(p.alpha(T) ** 2 + p.sigma(T) ** 2, torch.ones_like(T))


def test_trig_preserves_variance_in_data_units():
    p = noise.trig(sigma_d=0.5)
    assert_close(p.alpha(T) ** 2 + (p.sigma(T) / 0.5) ** 2, torch.ones_like(T))


def test_boundary_values():
    zero, one = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    for p in (noise.vp(), noise.flow(), noise.trig()):
        assert_close(p.alpha(zero), one)
        assert_close(p.sigma(zero), zero, atol=1e-12, rtol=0)
        assert_close(p.alpha(one), zero, atol=1e-12, rtol=0)
    assert_close(noise.flow().sigma(one), one)
    assert_close(noise.trig(0.5).sigma(one), 0.5 * one)
    e = noise.edm(sigma_min=0.002, sigma_max=80.0)
    assert_close(e.sigma(zero), 0.002 * one)
    assert_close(e.sigma(one), 80.0 * one)
    assert_close(e.alpha(T), torch.ones_like(T))


def test_edm_ramp_is_karras_eq5():
    e = noise.edm(0.002, 80.0, 7.0)
    n = 18
    i = torch.arange(n, dtype=torch.float64)
    # Karras et al. 2022, eq. 5: sigma_i for i = 0..N-1 from sigma_max down to sigma_min.
    karras = (80.0 ** (1 / 7) + i / (n - 1) * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    assert_close(e.sigma(1 - i / (n - 1)), karras)


def test_vp_table_matches_diffusers_at_every_training_step():
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear")
    p = noise.vp(sched.alphas_cumprod)
    assert isinstance(p, noise.VPTable)
    k = torch.arange(1000, dtype=torch.float64)
    t = k / 999
    assert_close(p.alpha(t) ** 2, sched.alphas_cumprod.double())
    assert_close(p.timestep(t), k)
    # Between grid points log(alphas_cumprod) is linear: the midpoint is the geometric mean.
    mid = p.alpha((k[:-1] + 0.5) / 999) ** 2
    ac = sched.alphas_cumprod.double()
    assert_close(mid, torch.sqrt(ac[:-1] * ac[1:]))


def test_vp_preset_tables_equal_diffusers_betas():
    for schedule in ("linear", "scaled_linear"):
        sched = DDPMScheduler(
            num_train_timesteps=1000, beta_schedule=schedule, beta_start=1e-4, beta_end=0.02
        )
        p = noise.vp(schedule=schedule, beta_start=1e-4, beta_end=0.02)
        assert isinstance(p, noise.VPTable)
        assert_close(p.alphas_cumprod, sched.alphas_cumprod.double(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_derivatives_match_finite_differences(name):
    p, h = PRESETS[name], 1e-6
    t = T[(T * 999 % 1 > 0.01) & (T * 999 % 1 < 0.99)]  # off the VP table's kinks
    assert_close(p.d_alpha(t), (p.alpha(t + h) - p.alpha(t - h)) / (2 * h), rtol=1e-5, atol=1e-6)
    assert_close(p.d_sigma(t), (p.sigma(t + h) - p.sigma(t - h)) / (2 * h), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_log_snr_is_decreasing_and_invertible(name):
    p = PRESETS[name]
    lam = p.log_snr(T)
    assert bool((lam[1:] < lam[:-1]).all())
    assert_close(p.t_from_log_snr(lam), T, atol=1e-9, rtol=0)
    assert_close(p.t_from_sigma_ratio(p.sigma(T) / p.alpha(T)), T, atol=1e-9, rtol=0)


def test_add_noise_broadcasts_per_sample():
    p = noise.flow()
    x0, eps = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([0.0, 0.5, 1.0])
    x = p.add_noise(x0, eps, t)
    assert_close(x[0], x0[0])
    assert_close(x[1], 0.5 * x0[1] + 0.5 * eps[1])
    assert_close(x[2], eps[2])


def test_bad_tables_are_rejected():
    with pytest.raises(ValueError, match="non-increasing"):
        noise.vp(torch.tensor([0.5, 0.9]))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        noise.vp(torch.tensor([1.5, 0.9]))
    with pytest.raises(ValueError, match="unknown VP schedule"):
        noise.vp(schedule="sigmoid")
    with pytest.raises(ValueError, match="sigma_min"):
        noise.edm(sigma_min=5.0, sigma_max=1.0)


def _ks(samples: torch.Tensor, cdf) -> float:
    x = samples.double().sort().values
    n = x.numel()
    emp = torch.arange(1, n + 1, dtype=torch.float64) / n
    return float((emp - cdf(x)).abs().max())


def test_time_samplers_follow_their_densities():
    g = torch.Generator().manual_seed(0)
    n = 20000
    bound = 1.63 / math.sqrt(n)  # KS critical value at the 1% level
    assert _ks(noise.uniform(n, generator=g), lambda x: x) < bound
    u = noise.uniform(n, t_min=0.2, t_max=0.6, generator=g)
    assert 0.2 <= float(u.min()) and float(u.max()) <= 0.6
    normal = torch.distributions.Normal(0.5, 1.2)
    ln = noise.logit_normal(n, mean=0.5, std=1.2, generator=g)
    assert _ks(ln, lambda x: normal.cdf(torch.log(x / (1 - x)))) < bound
    a = 4.0
    us = noise.u_shaped(n, a=a, generator=g)
    cdf = lambda x: (torch.sinh(a * (x - 0.5)) + math.sinh(a / 2)) / (2 * math.sinh(a / 2))  # noqa: E731
    assert _ks(us, cdf) < bound
    assert float(us.min()) >= 0 and float(us.max()) <= 1
    # U-shaped: more mass near the ends than in the middle.
    assert ((us < 0.1) | (us > 0.9)).float().mean() > 2 * ((us > 0.4) & (us < 0.6)).float().mean()


def test_edm_lognormal_gives_lognormal_noise_levels_for_any_process():
    g = torch.Generator().manual_seed(1)
    for p in (noise.edm(1e-4, 1e4), noise.vp(), noise.flow()):
        t = noise.edm_lognormal(20000, p, p_mean=-1.2, p_std=1.2, generator=g)
        log_ratio = torch.log(p.sigma(t) / p.alpha(t))
        assert abs(float(log_ratio.mean()) + 1.2) < 0.05
        assert abs(float(log_ratio.std()) - 1.2) < 0.05


def test_discrete_draws_only_from_the_set():
    t = noise.discrete(1000, [1.0, 0.75, 0.5])
    assert set(t.tolist()) == {1.0, 0.75, 0.5}
    with pytest.raises(ValueError):
        noise.discrete(3, [])

import pytest
import torch
from torch.testing import assert_close

from onestep.core import noise
from onestep.core.denoiser import from_x0
from onestep.core.objectives import DSM_WEIGHTS, dsm_loss, dsm_weight, mean_flat
from onestep.core.testing import grad_of

PROCESSES = {
    "vp-table": lambda: noise.vp(schedule="linear", num_train_timesteps=100),
    "vp-cosine": noise.vp,
    "edm": noise.edm,
    "flow": noise.flow,
    "trig": lambda: noise.trig(0.5),
}


def _batch(process, shape=(6, 3, 4, 4)):
    x0 = torch.randn(shape, dtype=torch.float64)
    x0_pred = x0 + 0.3 * torch.randn(shape, dtype=torch.float64)
    eps = torch.randn(shape, dtype=torch.float64)
    t = torch.linspace(0.05, 0.95, shape[0], dtype=torch.float64)
    return x0_pred, x0, process.add_noise(x0, eps, t), t


def _native_mse(kind, process, x0_pred, x0, x_t, t):
    pred = from_x0(x0_pred, kind, x_t, t, process)
    target = from_x0(x0, kind, x_t, t, process)
    return (pred - target).square().mean(dim=(1, 2, 3))


@pytest.mark.parametrize("name", sorted(PROCESSES))
@pytest.mark.parametrize("kind", ["x0", "eps", "v", "flow"])
def test_weight_equals_native_parametrisation_mse(name, kind):
    process = PROCESSES[name]()
    x0_pred, x0, x_t, t = _batch(process)
    expected = _native_mse(kind, process, x0_pred, x0, x_t, t)
    assert_close(dsm_loss(x0_pred, x0, dsm_weight(process, t, kind)), expected)


def test_min_snr_is_clipped_eps_loss():
    process = noise.vp()
    x0_pred, x0, x_t, t = _batch(process)
    snr = (process.alpha(t) / process.sigma(t)) ** 2
    assert (snr > 5).any() and (snr < 5).any()  # both sides of the clip are exercised
    eps_mse = _native_mse("eps", process, x0_pred, x0, x_t, t)
    expected = eps_mse * torch.minimum(snr, torch.full_like(snr, 5.0)) / snr
    assert_close(dsm_loss(x0_pred, x0, dsm_weight(process, t, "min_snr", gamma=5.0)), expected)


@pytest.mark.parametrize("name", ["edm", "flow"])
def test_edm_weight_is_karras_lambda(name):
    process = PROCESSES[name]()
    x0_pred, x0, _, t = _batch(process)
    s = process.sigma(t) / process.alpha(t)  # EDM's sigma for x_t / alpha = x0 + s eps
    lam = (s**2 + 0.25) / (s * 0.5) ** 2
    expected = lam * ((x0_pred - x0) ** 2).mean(dim=(1, 2, 3))
    assert_close(dsm_loss(x0_pred, x0, dsm_weight(process, t, "edm", sigma_data=0.5)), expected)


def test_sigmoid_weight():
    process = noise.vp()
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    snr = (process.alpha(t) / process.sigma(t)) ** 2
    expected = snr / (1 + snr * torch.exp(torch.tensor(-1.0, dtype=torch.float64)))
    assert_close(dsm_weight(process, t, "sigmoid", bias=1.0), expected)


def test_dsm_loss_gradient_closed_form():
    x0_pred, x0 = torch.randn(4, 2, 5), torch.randn(4, 2, 5)
    w = torch.rand(4)
    (g,) = grad_of(lambda p: dsm_loss(p, x0, w), x0_pred)
    assert_close(g, 2 * w[:, None, None] * (x0_pred - x0) / 10)


def test_dsm_loss_default_weight_and_rank_agnostic():
    for shape in [(3,), (3, 2), (3, 2, 2, 2, 2)]:
        a, b = torch.randn(shape), torch.randn(shape)
        assert_close(dsm_loss(a, b), mean_flat((a - b) ** 2))
        assert dsm_loss(a, b).shape == (3,)


def test_errors_name_the_problem():
    process = noise.flow()
    t = torch.rand(3)
    with pytest.raises(ValueError, match="unknown DSM weighting 'snr'"):
        dsm_weight(process, t, "snr")
    with pytest.raises(ValueError, match="one shape"):
        dsm_loss(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="weight must have shape"):
        dsm_loss(torch.zeros(3, 2), torch.zeros(3, 2), torch.ones(4))
    with pytest.raises(ValueError, match="t must have shape"):
        dsm_weight(process, torch.rand(3, 1))


def test_all_weights_positive_and_finite():
    t = torch.linspace(0.02, 0.98, 9)
    for name, make in PROCESSES.items():
        for kind in DSM_WEIGHTS:
            w = dsm_weight(make(), t, kind)
            assert w.shape == (9,) and bool(torch.isfinite(w).all() and (w > 0).all()), (name, kind)

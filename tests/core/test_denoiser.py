"""The Denoiser contract: prediction conversions, timestep conventions, derived quantities, CFG."""

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from onestep.core import noise
from onestep.core.denoiser import PREDICTIONS, Denoiser, Guided, from_x0, to_x0

PROCESSES = [noise.vp(), noise.vp(schedule="linear"), noise.edm(), noise.flow(), noise.trig()]


def _batch(dtype=torch.float64):
    x0, eps = torch.randn(6, 2, 3, 3, dtype=dtype), torch.randn(6, 2, 3, 3, dtype=dtype)
    t = torch.linspace(0.05, 0.95, 6, dtype=dtype)
    return x0, eps, t


@pytest.mark.parametrize("process", PROCESSES, ids=repr)
def test_native_predictions_from_known_x0_and_eps(process):
    """Each native prediction, written from (x0, eps) by its definition, converts back to x0."""
    x0, eps, t = _batch()
    x_t = process.add_noise(x0, eps, t)
    a, s = process.coefficients(t, 4)
    da, ds = (noise.append_dims(f(t), 4) for f in (process.d_alpha, process.d_sigma))
    native = {"eps": eps, "x0": x0, "v": a * eps - s * x0, "flow": da * x0 + ds * eps}
    for kind, out in native.items():
        assert_close(to_x0(out, kind, x_t, t, process), x0)
        assert_close(from_x0(x0, kind, x_t, t, process), out)


def test_flow_velocity_is_eps_minus_x0_for_rectified_flow():
    x0, eps, t = _batch()
    p = noise.flow()
    assert_close(from_x0(x0, "flow", p.add_noise(x0, eps, t), t, p), eps - x0)


@pytest.mark.parametrize("process", PROCESSES, ids=repr)
@pytest.mark.parametrize("kind", PREDICTIONS)
def test_round_trip_on_arbitrary_outputs(process, kind):
    x_t, out, _ = _batch()
    t = torch.rand(6, dtype=torch.float64) * 0.9 + 0.05
    assert_close(from_x0(to_x0(out, kind, x_t, t, process), kind, x_t, t, process), out)


def test_diffusers_names_and_bad_prediction():
    x_t, out, t = _batch()
    p = noise.vp()
    assert_close(to_x0(out, "epsilon", x_t, t, p), to_x0(out, "eps", x_t, t, p))
    assert_close(to_x0(out, "v_prediction", x_t, t, p), to_x0(out, "v", x_t, t, p))
    with pytest.raises(ValueError, match="unknown prediction 'score'"):
        Denoiser(nn.Identity(), p, prediction="score")


class Recorder(nn.Module):
    """Returns a fixed function of its inputs and remembers the timestep it saw."""

    def forward(self, x, timestep, cond=None):
        self.seen = timestep
        out = 0.5 * x + noise.append_dims(timestep, x.ndim)
        return out if cond is None else out + cond


def test_timestep_convention_and_derived_quantities():
    p = noise.vp(schedule="linear")
    d = Denoiser(Recorder(), p, prediction="eps", timestep=999.0).double()
    x0, eps, t = _batch()
    x_t = p.add_noise(x0, eps, t)
    x0_hat = d(x_t, t)
    assert_close(d.net.seen, t * 999)
    eps_hat = 0.5 * x_t + noise.append_dims(t * 999, 4)
    a, s = p.coefficients(t, 4)
    assert_close(x0_hat, (x_t - s * eps_hat) / a)
    assert_close(d.eps(x_t, t), eps_hat)
    assert_close(d.score(x_t, t), -eps_hat / s)
    assert_close(d.raw(x_t, t), eps_hat)
    # A callable convention, e.g. EDM's c_noise = log(sigma) / 4.
    e = noise.edm()
    d2 = Denoiser(Recorder(), e, prediction="x0", timestep=lambda t: torch.log(e.sigma(t)) / 4)
    d2(x_t, t)
    assert_close(d2.net.seen, torch.log(e.sigma(t)) / 4)


def test_velocity_is_the_time_derivative_of_the_ode_solution_for_a_point_mass():
    """For data = a single point c, E[x0|x_t] = c and the ODE path x_t = alpha c + sigma eps."""
    c = torch.randn(1, 4, dtype=torch.float64)

    class PointMass(nn.Module):
        def forward(self, x, timestep):
            return c.expand_as(x)

    eps = torch.randn(1, 4, dtype=torch.float64)
    for p in PROCESSES:
        d = Denoiser(PointMass(), p, prediction="x0")
        t, h = torch.tensor([0.4], dtype=torch.float64), 1e-6
        fd = (p.add_noise(c, eps, t + h) - p.add_noise(c, eps, t - h)) / (2 * h)
        assert_close(d.velocity(p.add_noise(c, eps, t), t), fd, rtol=1e-5, atol=1e-6)


def test_t_shape_is_checked_and_scalars_broadcast():
    d = Denoiser(Recorder(), noise.flow(), prediction="x0")
    x = torch.randn(4, 3)
    assert d(x, 0.5).shape == (4, 3)
    with pytest.raises(ValueError, match=r"t must have shape \[B\] = \[4\]"):
        d(x, torch.rand(3))


def test_cfg_matches_the_formula_and_uses_one_batched_pass():
    p = noise.flow()
    calls = []

    class Net(nn.Module):
        def forward(self, x, timestep, cond):
            calls.append(x.shape[0])
            return x * cond

    d = Denoiser(Net(), p, prediction="x0")
    x, t = torch.randn(5, 3), torch.rand(5)
    cond, null = torch.full((5, 1), 2.0), torch.zeros(1, 1)
    g = Guided(d, scale=3.0, uncond=null)
    out = g(x, t, cond)
    assert calls == [10]
    assert_close(out, 0 * x + 3.0 * (2 * x - 0 * x))
    assert_close(g.eps(x, t, cond), from_x0(out, "eps", x, t, p))


def test_random_scale_cfg_draws_a_weight_per_sample_in_range():
    d = Denoiser(Recorder(), noise.flow(), prediction="x0")
    g = Guided(
        d, scale=(1.0, 7.0), uncond=torch.zeros(1, 1), generator=torch.Generator().manual_seed(0)
    )
    w = g.weights(4000, torch.device("cpu"))
    assert float(w.min()) >= 1.0 and float(w.max()) <= 7.0
    assert abs(float(w.mean()) - 4.0) < 0.1 and float(w.std()) > 1.5
    x, t, cond = torch.randn(3, 2), torch.rand(3), torch.ones(3, 1)
    w3 = torch.tensor([1.0, 2.0, 5.0])
    x0_c, x0_u = d(x, t, cond), d(x, t, torch.zeros(3, 1))
    assert_close(g(x, t, cond, scale=w3), x0_u + w3[:, None] * (x0_c - x0_u))
    with pytest.raises(ValueError, match="lo <= hi"):
        Guided(d, scale=(5.0, 1.0), uncond=None)


def test_cfg_batches_dict_conditions():
    class Net(nn.Module):
        def forward(self, x, timestep, cond):
            return x * cond["a"] + cond["b"]

    d = Denoiser(Net(), noise.flow(), prediction="x0")
    x, t = torch.randn(2, 3), torch.rand(2)
    cond = {"a": torch.full((2, 1), 2.0), "b": torch.ones(2, 1)}
    null = {"a": torch.zeros(1, 1), "b": torch.zeros(1, 1)}
    out = Guided(d, scale=2.0, uncond=null)(x, t, cond)
    assert_close(out, 2.0 * (2 * x + 1))

"""Samplers: agreement with diffusers' own schedulers, convergence on an analytic Gaussian teacher,
few-step student sampling, grids, NFE counts and shapes.

Mapping to diffusers (VP schedulers): training step ``k`` of ``N = 1000`` is ``t = k / 999`` in
:class:`~onestep.core.noise.VPTable`, so a Denoiser with ``timestep=999`` feeds the UNet exactly
``k``. Every scheduler is set up to visit integer ``k`` only ("trailing" spacing; DPM-Solver's
default "linspace" rounds to integers), where the table needs no interpolation, and to end at the
data (DDIM ``set_alpha_to_one=True``; the others ``final_sigmas_type="zero"``), which is our
``ts[-1] = 0``. Euler and Heun keep their state in ``y = x / alpha = x sqrt(1 + sigma^2)``; DDIM,
DPM-Solver and flow matching in ``x`` itself. diffusers' Euler/DPM/flow steps compute in float32,
which bounds the agreement (about 1e-6 relative here).
"""

import math

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    HeunDiscreteScheduler,
    UNet2DModel,
)
from torch.testing import assert_close

from onestep.core import noise, sampling
from onestep.core.data.gmm import GaussianMixture
from onestep.core.denoiser import Denoiser, DenoiserBase

# diffusers' schedulers call np.array on tensors; numpy 2 warns about the copy keyword.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# ---------------------------------------------------------------------------------------------
# A tiny diffusers UNet as the teacher


class UNetDenoiser(Denoiser):
    """diffusers' ``UNet2DModel`` returns a ``UNet2DOutput``; the Denoiser wants ``.sample``."""

    def call_net(self, x_t, timestep, cond=None):
        return self.net(x_t, timestep).sample


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads and lose a lot on a loaded 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    net = UNet2DModel(
        sample_size=8,
        in_channels=2,
        out_channels=2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    return net.double().eval()


def run_diffusers(scheduler, unet, sample, n_steps=None):
    """diffusers' own loop: scale_model_input, model, step; optionally stop after n_steps."""
    with torch.no_grad():
        for i, k in enumerate(scheduler.timesteps):
            if n_steps is not None and i == n_steps:
                break
            scale = getattr(scheduler, "scale_model_input", None)  # flow matching has none
            out = unet(sample if scale is None else scale(sample, k), k).sample
            sample = scheduler.step(out, k, sample).prev_sample
    return sample


VP_CONFIG = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
PREDICTIONS = ["epsilon", "v_prediction"]


def _vp_setup(scheduler, unet, steps=10):
    scheduler.set_timesteps(steps)
    process = noise.vp(scheduler.alphas_cumprod)
    d = UNetDenoiser(unet, process, scheduler.config.prediction_type, timestep=999.0)
    ks = torch.unique_consecutive(scheduler.timesteps).double()  # Heun repeats its timesteps
    ts = torch.cat([ks / 999, torch.zeros(1, dtype=torch.float64)])
    x = process.sigma(ts[:1]) * torch.randn(2, 2, 8, 8, dtype=torch.float64)
    return d, ts, x


def _to_y(x, scheduler):
    """Karras' y = x / alpha = x sqrt(1 + sigma^2), the state of diffusers' Euler and Heun."""
    return x * math.sqrt(1 + float(scheduler.sigmas[0]) ** 2)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_euler_matches_diffusers_ddim(unet, prediction):
    scheduler = DDIMScheduler(
        **VP_CONFIG,
        prediction_type=prediction,
        clip_sample=False,
        set_alpha_to_one=True,
        timestep_spacing="trailing",
    )
    d, ts, x = _vp_setup(scheduler, unet)
    assert ts[0] * 999 == pytest.approx(999) and ts[-2] * 999 == pytest.approx(99)
    with torch.no_grad():
        ours = sampling.ddim(d, x, ts)
    assert_close(ours, run_diffusers(scheduler, unet, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_euler_matches_diffusers_euler_discrete(unet, prediction):
    scheduler = EulerDiscreteScheduler(
        **VP_CONFIG, prediction_type=prediction, timestep_spacing="trailing"
    )
    d, ts, x = _vp_setup(scheduler, unet)
    with torch.no_grad():
        ours = sampling.euler(d, x, ts)
    assert_close(ours, run_diffusers(scheduler, unet, _to_y(x, scheduler)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_heun_matches_diffusers_heun_discrete(unet, prediction):
    """Exact on integer timesteps: diffusers interpolates sigma linearly at fractional ones (its
    default "linspace" spacing), where our table interpolates log alphas_cumprod."""
    scheduler = HeunDiscreteScheduler(
        **VP_CONFIG, prediction_type=prediction, timestep_spacing="trailing"
    )
    d, ts, x = _vp_setup(scheduler, unet)
    with torch.no_grad():
        ours = sampling.heun(d, x, ts)
    assert_close(ours, run_diffusers(scheduler, unet, _to_y(x, scheduler)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_dpm_solver_pp_2m_matches_diffusers(unet, prediction):
    scheduler = DPMSolverMultistepScheduler(
        **VP_CONFIG,
        prediction_type=prediction,
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        final_sigmas_type="zero",
        lower_order_final=True,
    )
    d, ts, x = _vp_setup(scheduler, unet)
    with torch.no_grad():
        ours = sampling.dpm_solver_pp_2m(d, x, ts)
        # Mid-run diffusers is second order in every step but the first: our grid cut after
        # 6 steps with lower_order_final=False must agree, and differ from the first-order ending.
        mid = sampling.dpm_solver_pp_2m(d, x, ts[:7], lower_order_final=False)
        lowered = sampling.dpm_solver_pp_2m(d, x, ts[:7], lower_order_final=True)
    assert_close(ours, run_diffusers(scheduler, unet, x), rtol=1e-5, atol=1e-5)
    scheduler.set_timesteps(10)
    reference = run_diffusers(scheduler, unet, x, n_steps=6)
    assert_close(mid, reference, rtol=1e-5, atol=1e-5)
    assert (lowered - reference).abs().max() > 1e-3


def _flow_setup(scheduler, unet):
    scheduler.set_timesteps(8)
    d = UNetDenoiser(unet, noise.flow(), "flow", timestep=1000.0)
    ts = torch.unique_consecutive(scheduler.sigmas).double()  # t = sigma for rectified flow
    return d, ts, torch.randn(2, 2, 8, 8, dtype=torch.float64)


def test_euler_matches_diffusers_flow_match_euler(unet):
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    d, ts, x = _flow_setup(scheduler, unet)
    assert ts[0] == 1.0 and ts[-1] == 0.0
    with torch.no_grad():
        ours = sampling.euler(d, x, ts)
    assert_close(ours, run_diffusers(scheduler, unet, x), rtol=1e-5, atol=1e-5)


def test_heun_flow_variables_match_diffusers_flow_match_heun(unet):
    """From t = 1 (alpha = 0) heun() uses rectified-flow variables: plain Heun in t for flow."""
    scheduler = FlowMatchHeunDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    d, ts, x = _flow_setup(scheduler, unet)
    with torch.no_grad():
        ours = sampling.heun(d, x, ts)
        explicit = sampling.heun(d, x, ts, variables="flow")
    assert_close(ours, explicit, rtol=0, atol=0)
    assert_close(ours, run_diffusers(scheduler, unet, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="variables='flow'"):
        sampling.heun(d, x, ts, variables="karras")


# ---------------------------------------------------------------------------------------------
# Analytic Gaussian teacher: x0 ~ N(mu, s^2 I)


MU, S = 1.5, 0.5


class GaussianTeacher(DenoiserBase):
    """Exact posterior mean for Gaussian data x0 ~ N(mu, s^2 I).

    x_t = a x0 + sg eps is jointly Gaussian with x0, so
    E[x0 | x_t] = mu + a s^2 (x_t - a mu) / (a^2 s^2 + sg^2).
    """

    def __init__(self, process, mu=MU, s=S):
        super().__init__()
        self.process, self.mu, self.s = process, mu, s
        self.calls = 0

    def forward(self, x_t, t, cond=None):
        self.calls += 1
        a, sg = (c.to(x_t.dtype) for c in self.process.coefficients(t, x_t.ndim))
        return self.mu + a * self.s**2 * (x_t - a * self.mu) / (a**2 * self.s**2 + sg**2)


def _coef(process, t):
    t = torch.tensor([t], dtype=torch.float64)
    return float(process.alpha(t)), float(process.sigma(t))


def exact_solution(process, x_start, t_start, t_end):
    """Closed-form probability-flow ODE solution for Gaussian data.

    The ODE is affine in x with a positive slope and carries N(a mu, std^2) at t_start to the
    same family at t_end (std_t^2 = a_t^2 s^2 + sg_t^2), so it keeps the standardised
    z = (x_t - a_t mu) / std_t fixed: x_end = a_end mu + std_end z.
    """
    a, sg = _coef(process, t_start)
    a_end, sg_end = _coef(process, t_end)
    z = (x_start - a * MU) / math.sqrt(a**2 * S**2 + sg**2)
    return a_end * MU + math.sqrt(a_end**2 * S**2 + sg_end**2) * z


def reference(process, eps, t_min):
    """Where every convergent solver lands from x_T = sigma(1) eps: the exact ODE solution at
    t_min, or for t_min = 0 (the data end) the teacher's x0 at the exact state at t = 0 (which
    is the data itself where sigma(0) = 0, and one denoising of the table floor otherwise)."""
    x = exact_solution(process, _coef(process, 1.0)[1] * eps, 1.0, t_min)
    if t_min > 0:
        return x
    return GaussianTeacher(process)(x, torch.zeros(eps.shape[0], dtype=torch.float64))


PRESETS = {
    "vp-table": noise.vp(schedule="scaled_linear"),
    "vp-cosine": noise.vp(),
    "edm": noise.edm(),
    "flow": noise.flow(),
    "trig": noise.trig(),
}


def _error(preset, solver, steps, eps, spacing="uniform", t_min=0.0):
    process = PRESETS[preset]
    x = sampling.sample(
        GaussianTeacher(process), eps, steps, solver=solver, spacing=spacing, t_min=t_min
    )
    return (x - reference(process, eps, t_min)).abs().max().item()


def _standard_normal(n, dim):
    """A noise batch with exactly zero mean and unit std per dim: no sampling error in moments."""
    eps = torch.randn(n, dim, dtype=torch.float64)
    return (eps - eps.mean(0)) / eps.std(0)


@pytest.mark.parametrize("solver", ["euler", "heun", "dpm++2m"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_64_steps_reach_the_gaussian(preset, solver):
    process = PRESETS[preset]
    eps = _standard_normal(512, 2)
    spacing = "log_snr" if preset == "vp-table" else "uniform"
    x = sampling.sample(GaussianTeacher(process), eps, 64, solver=solver, spacing=spacing)
    # x_T = sigma(1) eps drops the signal alpha(1) mu; the exact ODE carries that offset to the
    # data as a mean shift of s alpha(1) mu / std(1) (0.05 for the SD table, 0 for flow).
    a, sg = _coef(process, 1.0)
    shift = S * a * MU / math.sqrt(a**2 * S**2 + sg**2)
    assert_close(x.mean(0), torch.full((2,), MU - shift, dtype=torch.float64), atol=0.02, rtol=0)
    assert_close(x.std(0), torch.full((2,), S, dtype=torch.float64), atol=0.03, rtol=0)
    tol = {"euler": 8e-2, "heun": 1e-2, "dpm++2m": 1e-2}[solver]
    assert _error(preset, solver, 64, eps[:128], spacing=spacing) < tol


@pytest.mark.parametrize("preset", ["vp-table", "edm", "flow"])
def test_closed_form_reference_matches_a_1000_step_solve(preset):
    """The closed-form reference agrees with a 1000-step Euler solve (error ~ 1/n)."""
    eps = torch.randn(32, 3, dtype=torch.float64)
    spacing = "log_snr" if preset == "vp-table" else "uniform"
    assert _error(preset, "euler", 1000, eps, spacing=spacing) < 6e-3


@pytest.mark.parametrize("preset", list(PRESETS))
def test_higher_order_beats_euler_at_equal_nfe(preset):
    """At ~32 network evaluations Heun (16 steps, 31 NFE) and DPM-Solver++(2M) (32 steps) land
    closer to the exact ODE solution at t = 0.05 than Euler (32 steps), on one uniform grid.
    (At ~12 NFE Heun loses to Euler on EDM's sigma_max = 80 ramp: its first steps are huge.)"""
    eps = torch.randn(128, 2, dtype=torch.float64)
    assert sampling.nfe("heun", 16, to_data=False) <= sampling.nfe("euler", 32)
    err_euler = _error(preset, "euler", 32, eps, t_min=0.05)
    assert _error(preset, "heun", 16, eps, t_min=0.05) < err_euler
    assert _error(preset, "dpm++2m", 32, eps, t_min=0.05) < err_euler


@pytest.mark.parametrize(("solver", "order"), [("euler", 1), ("heun", 2), ("dpm++2m", 2)])
@pytest.mark.parametrize(
    ("preset", "spacing", "steps"), [("edm", "uniform", 16), ("vp-table", "log_snr", 32)]
)
def test_convergence_order(solver, order, preset, spacing, steps):
    """Doubling the steps divides the error by about 2^order."""
    eps = torch.randn(64, 2, dtype=torch.float64)
    coarse = _error(preset, solver, steps, eps, spacing=spacing, t_min=0.05)
    fine = _error(preset, solver, 2 * steps, eps, spacing=spacing, t_min=0.05)
    assert 2**order * 0.7 < coarse / fine < 2**order * 1.5


# ---------------------------------------------------------------------------------------------
# Grids, NFE, helpers, shapes


def test_time_grid_uniform_and_endpoints():
    ts = sampling.time_grid(4, t_max=0.9, t_min=0.1)
    assert_close(ts, torch.tensor([0.9, 0.7, 0.5, 0.3, 0.1], dtype=torch.float64))


def test_time_grid_log_snr_is_uniform_in_log_snr():
    process = PRESETS["vp-table"]
    ts = sampling.time_grid(8, spacing="log_snr", process=process)
    assert ts[0] == 1.0 and ts[-1] == 0.0 and ts.shape == (9,)
    steps = process.log_snr(ts).diff()
    assert_close(steps, steps.mean().expand_as(steps), rtol=1e-6, atol=0)


def test_time_grid_karras_is_the_edm_grid():
    """In EDM's own process the Karras ramp (same rho) is uniform in t; elsewhere it is still
    the ramp in sigma / alpha."""
    ts = sampling.time_grid(10, spacing="karras", process=noise.edm())
    assert_close(ts, sampling.time_grid(10), rtol=0, atol=1e-9)
    process = PRESETS["vp-table"]
    ts = sampling.time_grid(10, spacing="karras", process=process)
    ratio = (process.sigma(ts) / process.alpha(ts)) ** (1 / 7)
    assert_close(ratio.diff(), ratio.diff().mean().expand(10), rtol=1e-6, atol=0)


def test_time_grid_errors():
    with pytest.raises(ValueError, match="needs the noise process"):
        sampling.time_grid(4, spacing="log_snr")
    with pytest.raises(ValueError, match="unknown spacing 'cosine'"):
        sampling.time_grid(4, spacing="cosine", process=noise.flow())
    with pytest.raises(ValueError, match="log-SNR is infinite"):
        sampling.time_grid(4, spacing="log_snr", process=noise.flow())
    with pytest.raises(ValueError, match="t_max < 1"):
        sampling.time_grid(4, spacing="karras", process=noise.flow())
    with pytest.raises(ValueError, match="alpha is \\(nearly\\) 0"):  # cos(pi/2) = 6e-17
        sampling.time_grid(4, spacing="karras", process=noise.trig())
    assert sampling.time_grid(4, t_max=0.99, spacing="karras", process=noise.trig())[0] == 0.99
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        sampling.time_grid(0)
    with pytest.raises(ValueError, match="strictly descending"):
        sampling.euler(GaussianTeacher(noise.flow()), torch.zeros(2, 2), [0.0, 1.0])
    with pytest.raises(ValueError, match="unknown solver 'rk4'"):
        sampling.sample(GaussianTeacher(noise.flow()), torch.zeros(2, 2), 4, solver="rk4")


@pytest.mark.parametrize("solver", sampling.SOLVERS)
@pytest.mark.parametrize("t_min", [0.0, 0.2])
def test_nfe_counts_network_calls(solver, t_min):
    d = GaussianTeacher(noise.vp())
    sampling.sample(d, torch.randn(3, 2), 5, solver=solver, t_max=0.99, t_min=t_min)
    assert d.calls == sampling.nfe(solver, 5, to_data=t_min == 0.0)


class TimeRecorder(DenoiserBase):
    def __init__(self, process):
        super().__init__()
        self.process, self.times = process, []

    def forward(self, x_t, t, cond=None):
        self.times.append(t)
        return 0.9 * x_t


def test_half_precision_data_get_exact_float32_times():
    d = TimeRecorder(noise.vp(schedule="linear"))
    x = sampling.sample(d, torch.randn(3, 4, dtype=torch.bfloat16), 7, solver="dpm++2m")
    assert x.dtype == torch.bfloat16
    times = torch.stack(d.times)  # [7, B]
    assert times.dtype == torch.float32
    expected = sampling.time_grid(7)[:-1].float()
    assert_close(times, expected[:, None].expand(7, 3), rtol=0, atol=0)


def test_last_step_to_t0_returns_x0_on_a_vp_table():
    """t = 0 of a VP table is a floor (alpha < 1); the last step lands on x0_hat itself."""
    d = GaussianTeacher(PRESETS["vp-table"])
    x = torch.randn(5, 2, dtype=torch.float64)
    ts = torch.tensor([0.3, 0.0], dtype=torch.float64)
    expected = d(x, torch.full((5,), 0.3, dtype=torch.float64))
    for solver in (sampling.euler, sampling.heun, sampling.dpm_solver_pp_2m):
        assert_close(solver(d, x, ts), expected, rtol=0, atol=0)


def test_trajectory_and_ode_pairs_agree_with_sample():
    d = GaussianTeacher(noise.edm())
    eps = torch.randn(4, 3, dtype=torch.float64)
    ts, xs = sampling.trajectory(d, eps, 6, solver="dpm++2m")
    assert ts.shape == (7,) and xs.shape == (7, 4, 3)
    assert_close(xs[0], 80.0 * eps)
    final = sampling.sample(d, eps, 6, solver="dpm++2m")
    assert_close(xs[-1], final, rtol=0, atol=0)
    assert_close(xs[3], sampling.dpm_solver_pp_2m(d, xs[0], ts[:4], lower_order_final=False))
    pair_noise, pair_sample = sampling.ode_pairs(d, eps, 6, solver="dpm++2m")
    assert pair_noise is eps
    assert_close(pair_sample, final, rtol=0, atol=0)


@pytest.mark.parametrize("solver", sampling.SOLVERS)
def test_shapes_vector_and_image_agree(solver):
    """An elementwise teacher gives the same samples for [B, D] and [B, C, H, W] layouts."""
    d = GaussianTeacher(noise.vp())
    eps = torch.randn(3, 2, 4, 4)
    image = sampling.sample(d, eps, 5, solver=solver, t_max=0.99)
    vector = sampling.sample(d, eps.flatten(1), 5, solver=solver, t_max=0.99)
    assert image.shape == eps.shape and image.dtype == torch.float32
    assert_close(image.flatten(1), vector)


def test_gradients_flow_when_the_caller_wants_them():
    """Samplers do not force no_grad: a rollout is differentiable w.r.t. the initial noise."""
    d = GaussianTeacher(noise.flow())
    eps = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    sampling.sample(d, eps, 8, solver="heun").sum().backward()
    assert eps.grad is not None
    # Every step is affine in x for a Gaussian teacher: the slope is f(1) - f(0), near S.
    ones, zeros = torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    with torch.no_grad():
        slope = sampling.sample(d, ones, 8, solver="heun") - sampling.sample(
            d, zeros, 8, solver="heun"
        )
    assert_close(eps.grad, slope.expand_as(eps), rtol=1e-12, atol=0)
    assert abs(slope.item() - S) < 0.05


# ---------------------------------------------------------------------------------------------
# Few-step students


class FixedStudent(DenoiserBase):
    """Always answers the same x0."""

    def __init__(self, x0, process):
        super().__init__()
        self.x0, self.process = x0, process

    def forward(self, x_t, t, cond=None):
        return self.x0


class AffineStudent(DenoiserBase):
    """x0 = 0.5 x_t + t, remembering every (x_t, t) it saw."""

    def __init__(self, process):
        super().__init__()
        self.process, self.seen = process, []

    def forward(self, x_t, t, cond=None):
        self.seen.append((x_t, t))
        return 0.5 * x_t + t[:, None]


def test_few_step_one_step_returns_the_student_x0():
    x0 = torch.randn(4, 3)
    student = FixedStudent(x0, noise.vp())
    assert_close(sampling.few_step(student, torch.randn(4, 3), [1.0]), x0, rtol=0, atol=0)
    assert_close(sampling.few_step(student, torch.randn(4, 3), [1.0, 0.0]), x0, rtol=0, atol=0)


@pytest.mark.parametrize("process", [noise.flow(), noise.edm()], ids=repr)
def test_few_step_two_steps_renoise_with_add_noise(process):
    eps = torch.randn(4, 3)
    student = AffineStudent(process)
    out = sampling.few_step(
        student, eps, [1.0, 0.5, 0.0], generator=torch.Generator().manual_seed(7)
    )
    # Manual: start at sigma(1) eps, denoise, re-noise at t = 0.5 with the same generator.
    x_start = process.sigma(torch.ones(1)) * eps
    x0 = 0.5 * x_start + 1.0
    fresh = torch.randn(4, 3, generator=torch.Generator().manual_seed(7))
    x_half = process.add_noise(x0, fresh, torch.full((4,), 0.5))
    assert_close(out, 0.5 * x_half + 0.5)
    assert [t[0].item() for _, t in student.seen] == [1.0, 0.5]
    assert_close(student.seen[1][0], x_half)


def test_few_step_rejects_a_zero_start():
    with pytest.raises(ValueError, match="time > 0 to start from"):
        sampling.few_step(FixedStudent(torch.zeros(1, 1), noise.flow()), torch.zeros(1, 1), [0.0])


# -- per-sample steps (consistency targets) ------------------------------------------------------


def test_ode_step_matches_the_grid_solvers_per_sample():
    from onestep.core.sampling import ode_step

    process = noise.vp()
    d = GaussianMixture.ring(8).denoiser(process)
    x = torch.randn(6, 2)
    t = torch.tensor([0.9, 0.7, 0.5, 0.9, 0.3, 0.6])
    s = torch.tensor([0.5, 0.0, 0.4, 0.2, 0.1, 0.6])
    for solver in ("ddim", "heun"):
        got = ode_step(d, x, t, s, solver)
        for i in range(6):
            if t[i] == s[i]:
                assert_close(got[i], x[i])
                continue
            grid = torch.stack([t[i], s[i]])
            fn = sampling.ddim if solver == "ddim" else sampling.heun
            want = fn(d, x[i : i + 1], grid)
            assert_close(got[i : i + 1], want, rtol=1e-4, atol=1e-5, msg=f"{solver} {i}")


def test_ode_solve_converges_to_the_exact_flow():
    from onestep.core.sampling import ode_solve

    process = noise.vp()
    d = GaussianMixture.ring(8).denoiser(process)
    x = torch.randn(64, 2)
    t, s = torch.full((64,), 0.8), torch.full((64,), 0.1)
    fine = ode_solve(d, x, t, s, 400, "heun")
    errs = [(ode_solve(d, x, t, s, n, "ddim") - fine).abs().max() for n in (4, 8, 16)]
    assert errs[0] > errs[1] > errs[2]
    assert (ode_solve(d, x, t, s, 16, "heun") - fine).abs().max() < errs[2]
    with pytest.raises(ValueError, match="steps >= 1"):
        ode_solve(d, x, t, s, 0)
    with pytest.raises(ValueError, match="shape"):
        ode_solve(d, x, t[:3], s, 2)

"""CTMSR: consistency training on a noisy-LR-to-HR PF-ODE, plus Distribution Trajectory Matching.

You et al. 2025, "Consistency Trajectory Matching for One-Step Generative Super-Resolution"
(ICCV 2025, arXiv 2503.20349; official code LabShuHangGU/CTMSR). No teacher: the student learns
the one-step map from a noisy LR image to the HR image by consistency training (CT), then is
refined by DTM, which compares where the PF-ODE trajectories of the SR result and of the HR image
lead. All tensors live in one space (pixels or a VAE latent, :mod:`onestep.sr.space`): ``x0`` is
the HR image ``z_H``, ``y`` the upsampled LR ``z_L`` of the same shape.

Provenance. Only the paper's abstract was retrievable by the author of this module, so the
formulas below are taken from the official implementation (``basicsr/utils/diffusion.py``:
``q_sample``, ``karras_schedule``, ``improved_timesteps_schedule_*_linear``;
``basicsr/archs/edm_unet_arch.py``: ``EDMUNet.forward``; ``basicsr/models/
sr_edm_unet_real_model.py``: ``optimize_parameters``; ``options/train/ctmsr_train.yml``) and
derived here; docstrings name the paper's component (forward process, PF-ODE, CT loss, DTM) rather
than an equation number.

The process (ResShift-like residual shifting with an EDM-style noise ramp), ``t`` in [0, 1]::

    x_t = x0 + a(t) (y - x0) + s(t) eps,        eps ~ N(0, I)
    a(t) = t^rho_shift                           (karras_schedule(N, 0, 1, res_rho))
    s(t) = (s_min^(1/rho) + t (s_max^(1/rho) - s_min^(1/rho)))^rho   (karras_schedule, noise_rho)

so ``x_0 = x0`` (for ``s_min = 0``) and ``x_1 = y + s_max eps``, the noisy LR image the one-step
sampler starts from. Official defaults: ``s_min = 0``, ``s_max = 1``, both ``rho = 1``, i.e.
``x_t = x0 + t (y - x0) + t eps``. In the shifted variable ``x_t - a y = (1 - a) x0 + s eps`` it
is an affine noise process with ``alpha = 1 - a``, ``sigma = s``.

PF-ODE. Per sample ``dx_t/dt = a'(t) (y - x0) + s'(t) eps``; the marginal velocity (the PF-ODE
of ``p_t(x_t | y)``) is its conditional mean given ``x_t``::

    dx_t/dt = a'(t) (y - D(x_t, t)) + s'(t) eps_hat,   eps_hat = (x_t - D - a (y - D)) / s
            = a'(t) (y - D) - s(t) s'(t) grad log p_t(x_t | y)

with ``D = E[x0 | x_t, y]`` (Tweedie in the shifted variable: ``grad log p_t = -eps_hat / s``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from onestep.core.noise import append_dims
from onestep.core.objectives.consistency import consistency_loss, consistency_scalings
from onestep.core.objectives.distribution import dmd_normalizer, vsd_loss
from onestep.core.objectives.dsm import apply_weight, check_same_shape, mean_flat

__all__ = [
    "CT_DISTANCES",
    "CTMSRProcess",
    "charbonnier",
    "ctmsr_consistency",
    "ctmsr_ct_loss",
    "ctmsr_ct_pair",
    "ctmsr_num_points",
    "ctmsr_time_grid",
    "dtm_inputs",
    "dtm_loss",
    "dtm_target",
    "dtm_weight",
]

CT_DISTANCES: tuple[str, ...] = ("l2", "pseudo_huber", "charbonnier")


def _karras_ramp(t: Tensor, lo: float, hi: float, rho: float) -> Tensor:
    """``(lo^(1/rho) + t (hi^(1/rho) - lo^(1/rho)))^rho``: ``lo`` at ``t = 0``, ``hi`` at 1."""
    a, b = lo ** (1 / rho), hi ** (1 / rho)
    return (a + t * (b - a)) ** rho


def _d_karras_ramp(t: Tensor, lo: float, hi: float, rho: float) -> Tensor:
    """``d/dt`` of :func:`_karras_ramp`."""
    a, b = lo ** (1 / rho), hi ** (1 / rho)
    return rho * (b - a) * (a + t * (b - a)) ** (rho - 1)


class CTMSRProcess:
    """CTMSR's noisy-LR-to-HR process ``x_t = x0 + a(t) (y - x0) + s(t) eps`` (module docstring).

    Args:
        sigma_max: noise std at ``t = 1`` (official: 1); the sampler starts at ``y + sigma_max
            eps``.
        sigma_min: noise std at ``t = 0`` (official: 0, so ``x_0 = x0`` exactly).
        rho_noise: Karras exponent of the noise ramp ``s(t)`` (official ``noise_rho``: 1).
        rho_shift: exponent of the residual shift ``a(t) = t^rho_shift`` (official ``res_rho``: 1).
    """

    def __init__(
        self,
        sigma_max: float = 1.0,
        sigma_min: float = 0.0,
        rho_noise: float = 1.0,
        rho_shift: float = 1.0,
    ):
        if not 0.0 <= sigma_min < sigma_max:
            raise ValueError(
                f"need 0 <= sigma_min < sigma_max, got sigma_min={sigma_min}, "
                f"sigma_max={sigma_max} (official CTMSR: 0 and 1)"
            )
        if rho_noise <= 0 or rho_shift <= 0:
            raise ValueError(f"rho_noise and rho_shift must be > 0, got {rho_noise}, {rho_shift}")
        self.sigma_max, self.sigma_min = sigma_max, sigma_min
        self.rho_noise, self.rho_shift = rho_noise, rho_shift

    def shift(self, t: Tensor) -> Tensor:
        """Residual-shift weight ``a(t) = t^rho_shift``: 0 at the HR end, 1 at the LR end."""
        return _karras_ramp(t, 0.0, 1.0, self.rho_shift)

    def sigma(self, t: Tensor) -> Tensor:
        """Noise std ``s(t)``, ``sigma_min`` at ``t = 0`` and ``sigma_max`` at ``t = 1``."""
        return _karras_ramp(t, self.sigma_min, self.sigma_max, self.rho_noise)

    def d_shift(self, t: Tensor) -> Tensor:
        """``a'(t)``."""
        return _d_karras_ramp(t, 0.0, 1.0, self.rho_shift)

    def d_sigma(self, t: Tensor) -> Tensor:
        """``s'(t)``."""
        return _d_karras_ramp(t, self.sigma_min, self.sigma_max, self.rho_noise)

    def alpha(self, t: Tensor) -> Tensor:
        """Signal scale ``1 - a(t)`` of ``x0`` in ``x_t``; with :meth:`offset` the affine view.

        ``x_t = alpha x0 + sigma eps + offset``, ``offset = a y``; see
        :func:`onestep.sr.objectives.tadsr.tadsr_noised_pair`.
        """
        return 1.0 - self.shift(t)

    def offset(self, t: Tensor, y: Tensor) -> Tensor:
        """The ``x0``-free part ``a(t) y`` of the mean, shaped like ``y``; ``t`` is ``[B]``."""
        return append_dims(self.shift(t), y.ndim).to(y.dtype) * y

    def _coeffs(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape [B] = [{x.shape[0]}], got {tuple(t.shape)}")
        a = append_dims(self.shift(t), x.ndim).to(x.dtype)
        s = append_dims(self.sigma(t), x.ndim).to(x.dtype)
        return a, s

    def add_noise(self, x0: Tensor, y: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """The forward marginal ``x_t = x0 + a(t) (y - x0) + s(t) eps`` (CTMSR forward process).

        Official ``q_sample(y0=lq_up, x0=gt, ...)``: ``x0 + e0 * alpha + sigma * noise`` with
        ``e0 = y0 - x0``.

        Args:
            x0: HR sample ``[B, ...]``.
            y: upsampled LR in the same space, same shape.
            eps: standard normal noise, same shape.
            t: times ``[B]`` in [0, 1].
        """
        check_same_shape(x0=x0, y=y, eps=eps)
        a, s = self._coeffs(t, x0)
        return x0 + a * (y - x0) + s * eps

    def eps_from_x0(self, x_t: Tensor, y: Tensor, x0: Tensor, t: Tensor) -> Tensor:
        """The noise an HR estimate implies: ``(x_t - x0 - a (y - x0)) / s`` (needs ``s > 0``)."""
        check_same_shape(x_t=x_t, y=y, x0=x0)
        a, s = self._coeffs(t, x_t)
        return (x_t - x0 - a * (y - x0)) / s

    def velocity(self, x_t: Tensor, y: Tensor, x0: Tensor, t: Tensor) -> Tensor:
        """PF-ODE velocity ``dx_t/dt = a' (y - D) + s' (x_t - D - a (y - D)) / s`` (CTMSR PF-ODE).

        With ``x0 = D(x_t, t) = E[x0 | x_t, y]`` this is the probability-flow ODE of ``p_t(x_t |
        y)``; integrating it from ``t = 1`` (``y + sigma_max eps``) to 0 gives the deterministic
        noisy-LR-to-HR map the consistency model learns. Undefined where ``s(t) = 0`` (``t = 0``
        for ``sigma_min = 0``): solvers evaluate it at ``t > 0`` only.

        Args:
            x_t: state ``[B, ...]``.
            y: upsampled LR, same shape.
            x0: HR estimate at ``(x_t, t)``, same shape.
            t: times ``[B]`` in (0, 1].
        """
        check_same_shape(x_t=x_t, y=y, x0=x0)
        a, s = self._coeffs(t, x_t)
        da = append_dims(self.d_shift(t), x_t.ndim).to(x_t.dtype)
        ds = append_dims(self.d_sigma(t), x_t.ndim).to(x_t.dtype)
        return da * (y - x0) + ds * (x_t - x0 - a * (y - x0)) / s

    def __repr__(self) -> str:
        return (
            f"CTMSRProcess(sigma_max={self.sigma_max}, sigma_min={self.sigma_min}, "
            f"rho_noise={self.rho_noise}, rho_shift={self.rho_shift})"
        )


def ctmsr_consistency(
    x_t: Tensor,
    F: Tensor,
    t: Tensor,
    process: CTMSRProcess,
    sigma_data: float = 0.5,
    sigma_scale: float = 0.1,
) -> Tensor:
    """The consistency function ``f(x_t, t) = c_skip x_t + c_out F`` with ``f(x, 0) = x`` exactly.

    CTMSR's parametrisation (official ``EDMUNet.forward``): EDM/CM scalings of the noise level
    ``r = s(t) / sigma_scale``, ``c_skip = sigma_d^2 / (r^2 + sigma_d^2)``, ``c_out = r /
    sqrt(r^2 + sigma_d^2)`` (the code divides the noise level by 0.1 and uses ``sigma_d = 0.5``),
    shifted by the boundary level ``s(0)`` so that ``c_skip = 1``, ``c_out = 0`` at ``t = 0``
    (core :func:`~onestep.core.objectives.consistency.consistency_scalings`; for the official
    ``sigma_min = 0`` the shift is 0 and this is the code's formula). ``c_in = 1``; the network's
    time input there is ``log(s(t) + 0.002) / 4``, a choice of the method, not of this function.

    Args:
        x_t: state ``[B, ...]`` at time ``t``.
        F: raw network output at ``(x_t, t, y)``, same shape.
        t: times ``[B]`` in [0, 1].
        process: the CTMSR process (gives ``s(t)``).
        sigma_data: ``sigma_d`` (official: 0.5).
        sigma_scale: divisor of the noise level (official: 0.1; 1 is the plain CM form).

    Returns:
        The HR estimate ``[B, ...]``; equals ``x_t`` bit for bit where ``t = 0``.
    """
    check_same_shape(x_t=x_t, F=F)
    if t.shape != (x_t.shape[0],):
        raise ValueError(f"t must have shape [B] = [{x_t.shape[0]}], got {tuple(t.shape)}")
    if sigma_scale <= 0:
        raise ValueError(f"sigma_scale must be > 0 (official: 0.1), got {sigma_scale}")
    t = t.to(x_t.dtype)
    r = process.sigma(t) / sigma_scale
    # s(0) through the same arithmetic as s(t), so that r - r_min is exactly 0 at t = 0.
    r_min = process.sigma(torch.zeros_like(t)) / sigma_scale
    c_skip, c_out = consistency_scalings(r, r_min, sigma_data)
    return append_dims(c_skip, x_t.ndim) * x_t + append_dims(c_out, x_t.ndim) * F


def ctmsr_time_grid(num_points: int) -> Tensor:
    """The CT discretisation ``t_n = n / (N - 1)``, ``n = 0 .. N-1`` (increasing, float64).

    Uniform in ``t``: the Karras ``rho`` of the official ``karras_schedule`` lives in
    :class:`CTMSRProcess` (``a(t)``, ``s(t)``), so the grid itself is the linear ramp.
    """
    if num_points < 2:
        raise ValueError(f"the CT grid needs at least 2 points, got {num_points}")
    return torch.linspace(0.0, 1.0, num_points, dtype=torch.float64)


def ctmsr_num_points(step: int, total_steps: int, s0: int = 4, s1: int = 3) -> int:
    """CTMSR's curriculum of the CT grid: ``N(k) = s(k) + 1``, ``s`` linear from ``s0`` to ``s1``.

    Official ``improved_timesteps_schedule_{de,in}crease_linear`` (config ``s0: 4, s1: 3``):
    ``K' = floor(K / (|s0 - s1| + 1))`` and ``s`` moves one step toward ``s1`` every ``K'``
    iterations, then stays; ``s0 == s1`` gives a fixed grid. Unlike iCT's doubling
    (:func:`~onestep.core.objectives.consistency.ict_num_scales`) the grid is tiny and shrinks.

    Args:
        step: current iteration ``k`` (0-based).
        total_steps: total iterations ``K``.
        s0: number of intervals at the start.
        s1: number of intervals at the end.

    Returns:
        Number of grid points ``N`` for :func:`ctmsr_time_grid`.
    """
    if s0 < 1 or s1 < 1 or total_steps < 1:
        raise ValueError(f"need s0, s1 >= 1 and total_steps >= 1, got {s0}, {s1}, {total_steps}")
    if s0 == s1:
        return s0 + 1
    k_prime = max(1, math.floor(total_steps / (abs(s0 - s1) + 1)))
    moved = max(0, step) // k_prime
    s = max(s0 - moved, s1) if s0 > s1 else min(s0 + moved, s1)
    return s + 1


def ctmsr_ct_pair(
    x0: Tensor, y: Tensor, eps: Tensor, t_cur: Tensor, t_next: Tensor, process: CTMSRProcess
) -> tuple[Tensor, Tensor]:
    """The CT pair ``(x_{t_{n+1}}, x_{t_n})`` on one trajectory: same ``x0``, ``y`` and ``eps``.

    Consistency training (Song et al. 2023, eq. 10) on the CTMSR process: both points come from
    :meth:`CTMSRProcess.add_noise` with the same noise (official ``x_cur = q_sample(lq_up, gt,
    ..., index, noise)``, ``x_next`` at ``index + 1``).

    Returns:
        ``(x_next, x_cur)``: the online network's input (later time) and the target's.
    """
    if bool((t_next <= t_cur).any()):
        raise ValueError("ctmsr_ct_pair needs t_next > t_cur for every sample (t_{n+1} > t_n)")
    return process.add_noise(x0, y, eps, t_next), process.add_noise(x0, y, eps, t_cur)


def charbonnier(a: Tensor, b: Tensor, eps: float = 1e-12) -> Tensor:
    """Charbonnier distance ``mean_dims(sqrt((a - b)^2 + eps))`` per sample, ``[B]``.

    The pixel term of CTMSR's CT loss (official ``charbonnier_loss``, ``eps = 1e-12``): a smooth
    L1. ``eps`` is in squared units of ``a``.
    """
    if eps <= 0:
        raise ValueError(f"charbonnier needs eps > 0, got {eps}")
    check_same_shape(a=a, b=b)
    return mean_flat(torch.sqrt((a - b).square() + eps))


def ctmsr_ct_loss(
    f_online: Tensor,
    f_target: Tensor,
    distance_name: str = "charbonnier",
    weight: Tensor | float | None = None,
    c: float | None = None,
) -> Tensor:
    """CTMSR's consistency-training loss ``lambda d(f_theta(x_{t_{n+1}}), sg f_theta-(x_{t_n}))``.

    Song et al. 2023 eq. 10 on the CTMSR trajectory. Official choices: ``theta^- = theta`` (the
    target network is re-copied from the student every step, iCT-style, no EMA), ``lambda = 1``,
    ``n`` uniform over the ``N - 1`` intervals of :func:`ctmsr_time_grid` (one ``n`` per batch in
    the code), and ``d = 0.5 LPIPS + 0.5 Charbonnier``. LPIPS is a network, so the method adds it
    itself: ``0.5 * lpips(f_online, f_target.detach())``; this function gives the pure part.

    Args:
        f_online: :func:`ctmsr_consistency` of the student at ``(x_{t_{n+1}}, t_{n+1})``, with
            gradient, ``[B, ...]``.
        f_target: the same function of the stop-gradient copy at ``(x_{t_n}, t_n)``; detached
            here.
        distance_name: one of :data:`CT_DISTANCES` (``"l2"`` = mean squared error).
        weight: ``lambda`` per sample ``[B]`` (or a float); ``None`` means 1.
        c: pseudo-Huber scale (``"pseudo_huber"``) or Charbonnier ``eps`` (``"charbonnier"``).

    Returns:
        Per-sample loss ``[B]``.
    """
    check_same_shape(f_online=f_online, f_target=f_target)
    if distance_name == "charbonnier":
        loss = charbonnier(f_online, f_target.detach(), 1e-12 if c is None else c)
        return apply_weight(loss, weight)
    if distance_name not in CT_DISTANCES:
        raise ValueError(f"unknown CT distance {distance_name!r}; use one of {CT_DISTANCES}")
    return apply_weight(consistency_loss(f_online, f_target, None, distance_name, c), weight)


def dtm_inputs(
    x0_student: Tensor,
    x0_hr: Tensor,
    y: Tensor,
    eps: Tensor,
    t: Tensor,
    process: CTMSRProcess,
) -> tuple[Tensor, Tensor]:
    """The two trajectory points DTM compares: ``(z_t, x_t)`` with one shared noise.

    ``z_t`` puts the (detached) SR result on its noisy-LR-to-HR trajectory, ``x_t`` the HR
    image on its own, both at the same ``t`` with the same ``eps`` (official ``z_t =
    q_sample(lq_up, output.detach(), ...)``, ``x_t = q_sample(lq_up, gt, ...)``). Official
    time: ``dtm_opt`` (``t_min 0.1``, ``t_max 0.5`` of a 4-point index range) selects index 1
    of the current CT grid, i.e. ``t = t_1`` (1/4 or 1/3); any ``t`` in ``(0, 1]`` works here.

    Returns:
        ``(z_t, x_t)``, both without gradient to the student.
    """
    check_same_shape(x0_student=x0_student, x0_hr=x0_hr)
    z_t = process.add_noise(x0_student.detach(), y, eps, t)
    x_t = process.add_noise(x0_hr, y, eps, t)
    return z_t, x_t


def dtm_weight(x0_student: Tensor, x0_hr: Tensor, eps: float = 1e-6) -> Tensor:
    """DTM's per-sample weight ``1 / (mean_dims|x0_student - x0_hr| + eps)``, detached, ``[B]``.

    The official ``weight_type: improved``: DMD's normaliser (Yin et al. 2024, eq. 8) with the
    HR image in place of the real-score prediction (core
    :func:`~onestep.core.objectives.distribution.dmd_normalizer`).
    """
    return dmd_normalizer(x0_student, x0_hr, eps)


def dtm_target(
    x0_student: Tensor, x0_pred_fake: Tensor, x0_pred_real: Tensor, scale: Tensor | float = 1.0
) -> Tensor:
    """DTM's regression target ``sg(x0_student - scale (f(z_t) - f(x_t)))`` for any distance.

    The official DTM loss is ``0.5 w d(x0_student, target)`` with ``d`` = LPIPS and ``w`` from
    :func:`dtm_weight`; the method computes that with its perceptual network. For ``d`` = mean
    squared error it equals :func:`dtm_loss`. ``scale`` (``[B]`` or a float) folds a weight into
    the step instead of in front of ``d``.
    """
    check_same_shape(x0_student=x0_student, x0_pred_fake=x0_pred_fake, x0_pred_real=x0_pred_real)
    if isinstance(scale, Tensor):
        scale = append_dims(scale, x0_student.ndim).to(x0_student.dtype)
    return (x0_student - scale * (x0_pred_fake - x0_pred_real)).detach()


def dtm_loss(
    x0_student: Tensor,
    x0_pred_fake: Tensor,
    x0_pred_real: Tensor,
    x0_hr: Tensor | None = None,
    eps: float = 1e-6,
    *,
    weight: Tensor | float | None = None,
) -> Tensor:
    """Distribution Trajectory Matching loss, squared-error form (CTMSR's DTM).

    The SR result ``x0_student`` and the HR image are put on their PF-ODE trajectories with one
    noise (:func:`dtm_inputs`); a frozen consistency model ``f`` (official: a copy of the student
    refreshed every 1000 steps, ``self_iterative``) maps both back, and the student is moved by

        grad = w (f(z_t, t) - f(x_t, t)),    w = 1 / mean|x0_student - x0_hr|   (dtm_weight)

    through the surrogate ``0.5 w mean_dims((x0_student - sg(x0_student - g))^2)`` (core
    :func:`~onestep.core.objectives.distribution.vsd_loss`), so descent moves the SR result by
    ``f(x_t) - f(z_t)``: where the HR trajectory leads minus where its own leads. Unlike DMD there
    is no fake-score network: the "real" side is the model's own map of the real trajectory point
    with the same noise. Both predictions are detached; only ``x0_student`` gets gradient. The
    official loss uses LPIPS for ``d`` (see :func:`dtm_target`) with weight 1.6.

    Official schedule: a CT-only phase first (config ``ct_iter``), then CT + DTM in the same
    step; ``x0_student`` is the CT online output ``f_theta(x_{t_{n+1}}, t_{n+1})`` of that step
    (one forward pass serves both losses; for ``n = N - 2`` it is the one-step output from the
    noisy LR).

    Args:
        x0_student: SR result with gradient ``[B, ...]``.
        x0_pred_fake: ``f(z_t, t)``, the frozen model at the noised SR result, same shape.
        x0_pred_real: ``f(x_t, t)``, the frozen model at the noised HR image, same shape.
        x0_hr: HR image for the ``improved`` weight; ``None`` means ``w = 1`` (``simple``).
        eps: the weight's guard.
        weight: extra per-sample factor ``[B]`` (or a float), e.g. the loss weight 1.6.

    Returns:
        ``[B]``; its gradient w.r.t. ``x0_student`` is ``weight * w * (fake - real) / numel``.
    """
    check_same_shape(x0_student=x0_student, x0_pred_fake=x0_pred_fake, x0_pred_real=x0_pred_real)
    w = None if x0_hr is None else dtm_weight(x0_student, x0_hr, eps)
    loss = vsd_loss(x0_student, x0_pred_real, x0_pred_fake, weight=w)
    return apply_weight(loss, weight)

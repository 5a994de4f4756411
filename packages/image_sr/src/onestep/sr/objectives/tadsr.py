"""TAD-SR: time-aware distillation of a diffusion SR teacher into a one-step student.

He et al. 2024, "One Step Diffusion-based Super-Resolution with Time-Aware Distillation"
(arXiv 2408.07476; official code LearningHx/TAD-SR: ``TAD-SR/models/gaussian_diffusion.py``
``training_losses_distill`` / ``training_losses_D`` on a ResShift teacher, and
``TAD-SeeSR/train_tadsr.py`` on a Stable-Diffusion teacher). The student's generator loss is

    L_G = L_distill + lambda_hfsd L_HFSD + lambda_adv L_adv      (official: 1, 1, 0.02)

* ``L_distill``: MSE between the one-step output and the teacher's multi-step sample from the
  same start (:func:`tadsr_distill_loss`).
* ``L_HFSD``, high-frequency enhanced score distillation (:func:`tadsr_hfsd_loss`): the student
  output and a reference (the teacher's sample; the HR image in the paper's ablation) are
  perturbed by **one** noise at a **small** time; the frozen teacher's noise predictions at the
  two points are compared. Plain SDS uses ``eps_teacher(x_t) - eps`` and is biased (non-zero
  even when the student matches the teacher); with the shared noise the difference vanishes
  exactly when the student output equals the reference, and small times weigh high frequencies.
* ``L_adv``: hinge GAN on a **time-aware** discriminator that reads the frozen teacher's features
  of noised latents at a sampled time and takes that time as input
  (:func:`tadsr_generator_loss`, :func:`tadsr_discriminator_loss`, inputs from
  :func:`tadsr_noised_pair`).

Processes. Every helper takes the per-sample coefficients of an affine perturbation
``x_t = alpha x0 + sigma eps + offset`` (``offset`` independent of ``x0``): a core process gives
``alpha, sigma = process.alpha(t), process.sigma(t)`` and no offset (TAD-SeeSR's DDPM); a
ResShift teacher ``x_t = x0 + eta (y - x0) + kappa sqrt(eta) eps`` gives ``alpha = 1 - eta``,
``sigma = kappa sqrt(eta)``, ``offset = eta y`` (so does
:class:`~onestep.sr.objectives.ctmsr.CTMSRProcess`: ``alpha(t)``, ``sigma(t)``, ``offset(t, y)``).

Provenance. Only the abstract of the paper was retrievable by the author of this module, so the
formulas follow the official code and are cited by the paper's component names, not equation
numbers. Where the two released trainers differ it is said below.
"""

from __future__ import annotations

import torch
from torch import Tensor

from onestep.core.noise import append_dims
from onestep.core.objectives.adversarial import gan_discriminator_loss, gan_generator_loss
from onestep.core.objectives.distances import squared_l2
from onestep.core.objectives.distribution import vsd_loss
from onestep.core.objectives.dsm import apply_weight, check_same_shape

__all__ = [
    "TADSR_TIMES",
    "tadsr_discriminator_loss",
    "tadsr_distill_loss",
    "tadsr_eps_from_x0",
    "tadsr_generator_loss",
    "tadsr_hfsd_loss",
    "tadsr_noised_pair",
    "tadsr_time_grid",
]

#: The official teacher-step sets, ``name: (num_train_timesteps, start, stop, step)`` for
#: :func:`tadsr_time_grid`. ResShift (15 steps): HFSD at steps ``{0, 1, 2}`` (``randint(0, 3)``,
#: the "small time steps"), the discriminator at ``{0 .. 13}`` (``randint(0, T - 1)``); SD (1000
#: steps, TAD-SeeSR): both at ``{20, 40, .., 880}``, one step per batch.
TADSR_TIMES: dict[str, tuple[int, int, int, int]] = {
    "resshift_hfsd": (15, 0, 3, 1),
    "resshift_discriminator": (15, 0, 14, 1),
    "sd_hfsd": (1000, 20, 900, 20),
    "sd_discriminator": (1000, 20, 900, 20),
}


def tadsr_time_grid(num_train_timesteps: int, start: int, stop: int, step: int = 1) -> Tensor:
    """Teacher steps ``k in range(start, stop, step)`` as times ``t = k / (N - 1)`` in [0, 1].

    ``t * (N - 1)`` is the teacher's step index (the convention of
    :class:`~onestep.core.noise.VPTable`); draw from the grid with
    :func:`onestep.core.noise.discrete`. Presets: :data:`TADSR_TIMES`.
    """
    if num_train_timesteps < 2 or not 0 <= start < stop <= num_train_timesteps or step < 1:
        raise ValueError(
            f"need 0 <= start < stop <= num_train_timesteps (>= 2) and step >= 1, got "
            f"N={num_train_timesteps}, start={start}, stop={stop}, step={step}"
        )
    k = torch.arange(start, stop, step, dtype=torch.float64)
    return (k / (num_train_timesteps - 1)).float()


def _coeff(c: Tensor | float, like: Tensor) -> Tensor | float:
    """A float, or ``[B]`` coefficients shaped to broadcast against ``like``."""
    if isinstance(c, Tensor):
        if c.shape != (like.shape[0],):
            raise ValueError(
                f"coefficients must be floats or [B] = [{like.shape[0]}], got {tuple(c.shape)}"
            )
        return append_dims(c, like.ndim).to(like.dtype)
    return float(c)


def tadsr_noised_pair(
    x0_fake: Tensor,
    x0_real: Tensor,
    eps: Tensor,
    alpha: Tensor | float,
    sigma: Tensor | float,
    offset: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Fake and real latents perturbed at one time with **one** noise: ``(x_t_fake, x_t_real)``.

    ``x_t = alpha x0 + sigma eps + offset`` for both, so ``x_t_fake - x_t_real = alpha (x0_fake -
    x0_real)``. Used twice per step, with independent ``eps`` and ``t``:

    * HFSD: ``x0_fake`` = student output, ``x0_real`` = teacher sample (or HR); call under
      ``torch.no_grad()`` (the official code runs it in ``inference_mode``).
    * time-aware discriminator: ``x0_real`` = HR latent ``z_H``; keep the graph of ``x0_fake``
      so the generator's GAN loss reaches the student through the frozen teacher's features
      (official ``prior_sample_intermediate`` of ``gt`` and ``stu_out``, ``noise_dis``
      shared); detach it for the discriminator's own step.

    Nothing is detached here. The official ResShift trainer draws these noises with
    ``rand_like`` (uniform); pass standard normal ``eps`` as the SD trainer and the paper do.

    Args:
        x0_fake: student output ``[B, ...]``.
        x0_real: reference or real latent, same shape.
        eps: noise, same shape.
        alpha: signal scale, a float or ``[B]``.
        sigma: noise scale, a float or ``[B]``.
        offset: the ``x0``-free mean ``[B, ...]`` (ResShift: ``eta y``), or ``None``.
    """
    check_same_shape(x0_fake=x0_fake, x0_real=x0_real, eps=eps)
    a, s = _coeff(alpha, eps), _coeff(sigma, eps)
    noise = s * eps if offset is None else s * eps + offset
    return a * x0_fake + noise, a * x0_real + noise


def tadsr_eps_from_x0(
    x_t: Tensor,
    x0: Tensor,
    alpha: Tensor | float,
    sigma: Tensor | float,
    offset: Tensor | None = None,
) -> Tensor:
    """The noise prediction implied by an ``x0`` prediction: ``(x_t - alpha x0 - offset) / sigma``.

    For an ``x0``-predicting teacher (ResShift ``predict_type: xstart``; official
    ``tch_predict_noise``). A core :class:`~onestep.core.denoiser.Denoiser` has ``.eps()``.
    """
    check_same_shape(x_t=x_t, x0=x0)
    a, s = _coeff(alpha, x_t), _coeff(sigma, x_t)
    centred = x_t - a * x0 if offset is None else x_t - a * x0 - offset
    return centred / s


def tadsr_hfsd_loss(
    x0_student: Tensor,
    eps_fake: Tensor,
    eps_real: Tensor,
    weight: Tensor | float | None = None,
) -> Tensor:
    """High-frequency enhanced score distillation (TAD-SR's HFSD, "HSD" in the code).

    With ``(x_t_fake, x_t_real)`` from :func:`tadsr_noised_pair` (one noise, a small time ``t``,
    :data:`TADSR_TIMES`) and the frozen teacher's noise predictions ``eps_fake =
    eps_phi(x_t_fake, t, y)``, ``eps_real = eps_phi(x_t_real, t, y)``, the student gets

        grad_x0 L = weight (eps_fake - eps_real) / numel

    (official: ``mean_flat(grad * stu_out)`` with ``grad`` detached, ``hsd_weight = 1``, no time
    weighting). Here it is applied through DMD's surrogate ``0.5 weight mean((x - sg(x - g))^2)``
    (core :func:`~onestep.core.objectives.distribution.vsd_loss` with ``g = eps_fake -
    eps_real``): the same gradient, a loss value ``>= 0`` that is 0 at the optimum.

    In ``x0`` terms, since ``x_t_fake - x_t_real = alpha (x0_student - x0_ref)``::

        eps_fake - eps_real = (alpha / sigma) ((x0_student - x0_ref) - (D(x_t_fake) - D(x_t_real)))

    which is exactly 0 when ``x0_student = x0_ref``, whatever the teacher: the bias of SDS
    (``eps_phi(x_t_fake) - eps``) is gone.

    Args:
        x0_student: one-step output with gradient ``[B, ...]``.
        eps_fake: teacher's noise prediction at the noised student output (detached here).
        eps_real: teacher's noise prediction at the noised reference (detached here).
        weight: ``lambda_hfsd`` per sample ``[B]`` or a float; ``None`` means 1.

    Returns:
        Per-sample loss ``[B]``.
    """
    check_same_shape(x0_student=x0_student, eps_fake=eps_fake, eps_real=eps_real)
    return vsd_loss(x0_student, eps_real, eps_fake, weight=weight)


def tadsr_distill_loss(
    x0_student: Tensor, x0_teacher: Tensor, weight: Tensor | float | None = None
) -> Tensor:
    """TAD-SR's regression to the teacher: ``weight mean_dims((x0_student - sg(x0_teacher))^2)``.

    ``x0_teacher`` is the teacher's multi-step (DDIM, ``eta = 0``) sample from the same start
    ``z_T = y + kappa sqrt(eta_T) eps`` (TAD-SeeSR: a precomputed teacher output; with
    ``--target GT`` the HR latent). Gradient ``2 weight (x0_student - x0_teacher) / numel``.
    """
    check_same_shape(x0_student=x0_student, x0_teacher=x0_teacher)
    return apply_weight(squared_l2(x0_student, x0_teacher.detach()), weight)


def tadsr_generator_loss(logits_fake: Tensor, weight: Tensor | float | None = None) -> Tensor:
    """Generator side of TAD-SR's latent adversarial loss: ``-weight mean D(x_t_fake, t)``.

    Hinge GAN generator loss (core :func:`~onestep.core.objectives.adversarial.gan_generator_loss`
    ``kind="hinge"``); ``logits_fake`` are the time-aware discriminator's outputs on the frozen
    teacher's features of the noised student latent (with gradient), multi-head outputs
    concatenated along dim 1 (official ``th.cat(pred_fake, dim=1)``); their mean is taken per
    sample. Official weight ``lambda_adv = 0.02``. Gradient ``-weight / numel`` per logit.
    """
    return apply_weight(gan_generator_loss(logits_fake, "hinge"), weight)


def tadsr_discriminator_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Discriminator side: ``mean relu(1 - D(x_t_real, t)) + mean relu(1 + D(x_t_fake, t))``.

    Hinge GAN (core :func:`~onestep.core.objectives.adversarial.gan_discriminator_loss`
    ``kind="hinge"``), real = noised HR latent, fake = noised student latent (detached), both at
    the same sampled ``t`` and with the same noise (:func:`tadsr_noised_pair`); the
    discriminator sees the frozen teacher's features there and ``t`` itself. Trained with its own
    optimizer, before the generator step, on the same batch.
    """
    return gan_discriminator_loss(logits_real, logits_fake, "hinge")

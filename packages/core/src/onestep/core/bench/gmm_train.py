"""Training loop of the 2-D mixture benchmark: one-step students from the exact mixture teacher.

Teacher: the analytic ``E[x0 | x_t]`` of :meth:`GaussianMixture.ring` (8 modes, radius 2,
std 0.1) under rectified flow. Student: an :class:`~onestep.core.bench.nets.MLPGenerator`
``z -> x`` (one network evaluation). Fake score: a small trainable denoiser fitted by denoising
score matching to detached student samples, ``fake_steps`` updates per student update (DMD2's
two time-scale rule, Yin et al. 2024, sec. 4.1). f-divergences add a noisy-sample discriminator
whose logit estimates ``log p_t / q_t`` (f-distill, Xu et al. 2025). The loop is plain PyTorch:
with networks this small, a framework's per-step overhead would dominate the step.

Quality: energy distance to fresh true samples (same count for every row), and mode coverage.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onestep.core import noise
from onestep.core.bench.divergences import Divergence, get_divergence
from onestep.core.bench.nets import MLPGenerator, NoisyDiscriminator, build_fake_score
from onestep.core.bench.schedule import cosine_to_floor
from onestep.core.data.gmm import GaussianMixture, GMMDenoiser
from onestep.core.demo.teacher import denoising_loss
from onestep.core.denoiser import Denoiser
from onestep.core.ema import ema_update_
from onestep.core.metrics import energy_distance, mode_coverage

__all__ = [
    "Curve",
    "GMMConfig",
    "GMMTrainer",
    "Point",
    "flush_denormals",
    "mixture_preset",
    "train_student",
]


@dataclass(frozen=True)
class GMMConfig:
    """Hyperparameters of one student run on a 2-D mixture.

    Args:
        objective: student objective, a key of :data:`~onestep.core.bench.divergences.DIVERGENCES`.
        mixture: ``"ring"`` (8 equal modes) or ``"unbalanced"`` (heaviest / lightest = 10).
        steps: student updates.
        batch_size: student samples per update.
        fake_steps: fake-score (and discriminator) updates per student update.
        warmup_steps: fake-score updates on the initial student before the first student update.
        lr_student: Adam learning rate of the student (betas 0, 0.99 as in DMD2).
        lr_fake: Adam learning rate of the fake score and the discriminator.
        hidden: width of every network.
        t_min: lowest time of the student's distribution-matching gradient.
        t_max: highest time of the student's distribution-matching gradient.
        ema: decay of the exponential moving average of the student's weights that is evaluated
            (DMD2 and SiD report their EMA generator); 0 evaluates the raw student.
        lr_floor: the learning rates decay on a cosine from their value to this fraction of it
            over ``steps`` (1 keeps them constant).
        eval_every: student updates between evaluations of the curve.
        n_eval: samples per evaluation (student and true samples alike).
        seed: seed of initialisation, latents, times and noise.
    """

    objective: str = "dmd2"
    mixture: str = "ring"
    steps: int = 6000
    batch_size: int = 512
    fake_steps: int = 2
    warmup_steps: int = 200
    lr_student: float = 1e-3
    lr_fake: float = 2e-3
    hidden: int = 128
    t_min: float = 0.02
    t_max: float = 0.98
    ema: float = 0.0
    lr_floor: float = 1.0
    eval_every: int = 500
    n_eval: int = 4000
    seed: int = 0


@dataclass
class Point:
    """One evaluation on the curve: after ``step`` student updates and ``train_s`` seconds."""

    step: int
    train_s: float
    energy: float
    modes: int


@dataclass
class Curve:
    """The result of one run: its curve, final samples and quality."""

    objective: str
    seed: int
    points: list[Point] = field(default_factory=list)
    samples: Tensor | None = None
    fractions: list[float] = field(default_factory=list)
    student: nn.Module | None = None

    @property
    def final(self) -> Point:
        """The last evaluation."""
        return self.points[-1]

    def time_to(self, level: float) -> float | None:
        """Training seconds until the first evaluation with energy <= ``level`` (None: never)."""
        return next((p.train_s for p in self.points if p.energy <= level), None)

    def step_to(self, level: float) -> int | None:
        """Student updates until the first evaluation with energy <= ``level`` (None: never)."""
        return next((p.step for p in self.points if p.energy <= level), None)


def mixture_preset(name: str) -> GaussianMixture:
    """The benchmark's mixtures: ``ring`` (8 modes) and ``unbalanced`` (weights 10:1)."""
    if name == "ring":
        return GaussianMixture.ring(8)
    if name == "unbalanced":
        return GaussianMixture.unbalanced_ring(8, ratio=10.0)
    raise ValueError(f"unknown mixture {name!r}; use 'ring' or 'unbalanced'")


class GMMTrainer:
    """Student, fake score, optional discriminator and their optimisers for one run.

    The teacher is the exact mixture denoiser: it has no weights and is never updated.

    Args:
        config: the run's hyperparameters.
        mixture: the target mixture (the teacher's data).
    """

    def __init__(self, config: GMMConfig, mixture: GaussianMixture):
        self.config = config
        self.divergence: Divergence = get_divergence(config.objective)
        self.mixture = mixture
        self.process = noise.flow()
        self.teacher: GMMDenoiser = mixture.denoiser(self.process)
        self.gen = torch.Generator().manual_seed(config.seed)
        with torch.random.fork_rng(devices=[]):  # seeded init, global RNG untouched
            torch.manual_seed(config.seed)
            self.student = MLPGenerator(mixture.dim, config.hidden)
            self.fake_score: Denoiser = build_fake_score(self.process, mixture.dim, config.hidden)
            self.discriminator = NoisyDiscriminator(mixture.dim, config.hidden)
        betas = (0.0, 0.99)
        self.opt_student = torch.optim.Adam(
            self.student.parameters(), lr=config.lr_student, betas=betas
        )
        self.opt_fake = torch.optim.Adam(
            self.fake_score.parameters(), lr=config.lr_fake, betas=betas
        )
        self.opt_disc = torch.optim.Adam(
            self.discriminator.parameters(), lr=config.lr_fake, betas=(0.5, 0.99)
        )
        self._fake_params = list(self.fake_score.parameters())
        self.ema = copy.deepcopy(self.student).requires_grad_(False) if config.ema > 0 else None
        self.schedules = (
            [
                cosine_to_floor(opt, config.steps, config.lr_floor)
                for opt in (self.opt_student, self.opt_fake, self.opt_disc)
            ]
            if config.lr_floor < 1
            else []
        )

    # -- pieces of one step --------------------------------------------------------------------

    def latents(self, n: int | None = None) -> Tensor:
        """Standard normal latents ``[n, D]`` from the run's generator."""
        return torch.randn(n or self.config.batch_size, self.mixture.dim, generator=self.gen)

    def times(self, n: int, t_min: float = 0.0, t_max: float = 1.0) -> Tensor:
        """``t ~ U[t_min, t_max]``, ``[n]``."""
        return noise.uniform(n, t_min=t_min, t_max=t_max, generator=self.gen)

    def fake_score_step(self, x_fake: Tensor) -> Tensor:
        """One denoising-score-matching update of the fake score on detached student samples."""
        t = self.times(x_fake.shape[0])
        eps = torch.randn(x_fake.shape, generator=self.gen)
        loss = denoising_loss(self.fake_score, x_fake.detach(), t, eps).mean()
        self.opt_fake.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_fake.step()
        return loss.detach()

    def discriminator_step(self, x_fake: Tensor) -> Tensor:
        """One logistic update: noised true samples (label 1) against noised student samples."""
        n = x_fake.shape[0]
        x_real = self.mixture.sample(n, self.gen)
        t = self.times(n, self.config.t_min, self.config.t_max)
        pair = torch.cat([x_real, x_fake.detach()])
        x_t = self.process.add_noise(pair, torch.randn(pair.shape, generator=self.gen), t.repeat(2))
        logits = self.discriminator(x_t, t.repeat(2))
        labels = torch.cat([torch.ones(n), torch.zeros(n)])
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        self.opt_disc.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_disc.step()
        return loss.detach()

    def critic_steps(self, n: int) -> None:
        """``n`` updates of the fake score (and discriminator) on fresh student samples."""
        for _ in range(n):
            with torch.no_grad():
                x_fake = self.student(self.latents())
            self.fake_score_step(x_fake)
            if self.divergence.needs_ratio:
                self.discriminator_step(x_fake)

    def student_step(self) -> Tensor:
        """One update of the student with its objective; other networks stay untouched."""
        cfg = self.config
        x = self.student(self.latents())
        t = self.times(x.shape[0], cfg.t_min, cfg.t_max)
        eps = torch.randn(x.shape, generator=self.gen)
        x0_real, x0_fake, log_ratio = self._predictions(x, t, eps)
        loss = self.divergence.loss(x, x0_real, x0_fake, log_ratio).mean()
        self.opt_student.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_student.step()
        if self.ema is not None:
            ema_update_(self.ema, self.student, self.config.ema)
        for schedule in self.schedules:
            schedule.step()
        return loss.detach()

    @property
    def generator(self) -> nn.Module:
        """The network that is evaluated: the EMA student when ``config.ema > 0``."""
        return self.ema if self.ema is not None else self.student

    def _predictions(
        self, x: Tensor, t: Tensor, eps: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Teacher and fake-score ``x0`` at the noised ``x`` (and ``log p/q`` if needed).

        Objectives that differentiate through the score networks' inputs (SiD, SIM) freeze the
        fake score's weights for the pass; the others run it under ``no_grad`` and need not.
        """
        through = self.divergence.through_scores
        if through:
            _set_requires_grad(self._fake_params, False)
        try:
            with torch.set_grad_enabled(through):
                x_t = self.process.add_noise(x, eps, t)
                x0_real = self.teacher(x_t, t)
                x0_fake = self.fake_score(x_t, t)
        finally:
            if through:
                _set_requires_grad(self._fake_params, True)
        log_ratio = None
        if self.divergence.needs_ratio:
            with torch.no_grad():
                log_ratio = self.discriminator(x_t.detach(), t)
        return x0_real, x0_fake, log_ratio

    # -- evaluation ----------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, z: Tensor, reference: Tensor) -> tuple[float, int, Tensor, list[float]]:
        """Energy distance to ``reference``, covered modes, the samples and per-mode fractions."""
        x = self.generator(z)
        cover = mode_coverage(x, self.mixture)
        return energy_distance(x, reference), cover.covered, x, cover.fractions.tolist()


def _set_requires_grad(params: list[nn.Parameter], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Flush denormal floats to zero inside the block (and restore torch's default after).

    The mixture teacher's responsibilities and the small networks' gradients reach denormal
    magnitudes, which slow a CPU step by 10-30x; flushing them changes no figure we report.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def train_student(
    config: GMMConfig,
    z_eval: Tensor,
    reference: Tensor,
    *,
    on_point: Callable[[Point], None] | None = None,
) -> Curve:
    """Train one student and record its quality every ``config.eval_every`` updates.

    Args:
        config: the run.
        z_eval: fixed latents for evaluation, ``[n_eval, D]``.
        reference: true samples of the mixture, ``[n_eval, D]``.
        on_point: called with every new evaluation (progress output).

    Returns:
        The :class:`Curve`; ``train_s`` counts training time only, not evaluation.
    """
    with flush_denormals():
        return _train(config, z_eval, reference, on_point)


def _train(
    config: GMMConfig, z_eval: Tensor, reference: Tensor, on_point: Callable[[Point], None] | None
) -> Curve:
    trainer = GMMTrainer(config, mixture_preset(config.mixture))
    curve = Curve(config.objective, config.seed)
    curve.student = trainer.generator
    start = time.perf_counter()
    trainer.critic_steps(config.warmup_steps)
    train_s = time.perf_counter() - start
    for step in range(1, config.steps + 1):
        start = time.perf_counter()
        trainer.critic_steps(config.fake_steps)
        trainer.student_step()
        train_s += time.perf_counter() - start
        if step % config.eval_every == 0 or step == config.steps:
            energy, modes, samples, fractions = trainer.evaluate(z_eval, reference)
            curve.points.append(Point(step, train_s, energy, modes))
            curve.samples, curve.fractions = samples, fractions
            if on_point is not None:
                on_point(curve.points[-1])
    return curve

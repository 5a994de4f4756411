"""The Real-ESRGAN second-order degradation, batched in torch (Wang et al. 2021, sec. 3).

Real-ESRGAN ("Training Real-World Blind Super-Resolution with Pure Synthetic Data", ICCVW 2021)
makes a training LR from an HR crop by running the classical model ``blur -> resize -> noise ->
JPEG`` twice (the "second-order" process, sec. 3.1, fig. 2), then resizing to the LR size and
applying a 2-D sinc filter for ringing and overshoot artifacts (sec. 3.2), with the final
``[resize + sinc, JPEG]`` pair in a random order. The defaults of :class:`RealESRGANConfig` are the
paper's and the official ``train_realesrnet_x4plus.yml`` options.

Like the official ``RealESRGANModel.feed_data``, the whole batch runs at once on the batch's
device: the kernels (and the per-sample noise level and JPEG quality) differ per sample, the
resize factor, interpolation mode, Gaussian-vs-Poisson choice, second-blur decision and final
order are drawn once per batch (the batch must keep one spatial size). The official model
also shuffles degraded pairs through a 180-pair pool across batches to mix those per-batch
choices; that pool belongs to the training loop and is not reproduced here.

Reproducibility: every random draw comes from one seed taken from ``generator`` (or from torch's
global CPU RNG when it is ``None``). Kernel parameters and per-batch choices come from a
``numpy.random.Generator`` built from that seed; basicsr's noise functions draw from the global
RNG of the batch's device, so they run with that RNG seeded from the same seed and its state is
put back afterwards (the caller's RNG stream is left untouched). Same seed, device type and
input -> the same LR.

basicsr-fixed is imported lazily (it takes seconds and sets ``numpy.seterr(divide="ignore",
invalid="ignore")`` globally on import).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from basicsr.utils import DiffJPEG, USMSharp

__all__ = [
    "KERNEL_TYPES",
    "DegradationStage",
    "RealESRGANConfig",
    "RealESRGANDegradation",
    "usm_sharpen_gt",
]

KERNEL_TYPES: tuple[str, ...] = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
_ISOTROPIC = frozenset({"iso", "generalized_iso", "plateau_iso"})
_RESIZE_MODES: tuple[str, ...] = ("area", "bilinear", "bicubic")


def _check_range(name: str, r: tuple[float, float], lo: float = -math.inf, hi: float = math.inf):
    if len(r) != 2 or not lo <= r[0] <= r[1] <= hi:
        raise ValueError(f"{name} must be (low, high) with {lo} <= low <= high <= {hi}, got {r}")


def _check_prob(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} is a probability in [0, 1], got {p}")


def _check_probs(name: str, p: tuple[float, ...], n: int) -> None:
    if len(p) != n or min(p) < 0 or not math.isclose(sum(p), 1.0, abs_tol=1e-6):
        raise ValueError(f"{name} must be {n} non-negative probabilities summing to 1, got {p}")


@dataclass(frozen=True)
class DegradationStage:
    """One ``blur -> resize -> noise -> JPEG`` order of the degradation (Real-ESRGAN fig. 2).

    Defaults are the first order of the official ``train_realesrnet_x4plus.yml``.

    Attributes:
        blur_prob: probability of blurring the batch (1 in the first order, 0.8 in the second).
        kernel_list: blur kernel families (sec. 3.1 "Blur"), drawn per sample.
        kernel_prob: probability of each family in ``kernel_list``.
        sinc_prob: probability that a sample's blur kernel is a 2-D sinc instead (sec. 3.2).
        blur_sigma: range of the kernel standard deviations (pixels).
        betag_range: shape range of the generalized Gaussian kernels.
        betap_range: shape range of the plateau kernels.
        resize_prob: probabilities of resizing up / down / keeping the size.
        resize_range: range of the resize factor (up draws from ``[1, high]``, down from
            ``[low, 1]``).
        gaussian_noise_prob: probability of Gaussian noise (else Poisson noise).
        noise_range: Gaussian noise sigma range, on the 0-255 scale.
        poisson_scale_range: Poisson noise scale range.
        gray_noise_prob: per-sample probability that the noise is the same on all channels.
        jpeg_range: JPEG quality range, drawn per sample.
    """

    blur_prob: float = 1.0
    kernel_list: tuple[str, ...] = KERNEL_TYPES
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kernel_list) - set(KERNEL_TYPES))
        if unknown:
            raise ValueError(f"unknown kernel types {unknown}; choose from {list(KERNEL_TYPES)}")
        _check_probs("kernel_prob", self.kernel_prob, len(self.kernel_list))
        _check_probs("resize_prob", self.resize_prob, 3)
        for name in ("blur_prob", "sinc_prob", "gaussian_noise_prob", "gray_noise_prob"):
            _check_prob(name, getattr(self, name))
        _check_range("blur_sigma", self.blur_sigma, lo=1e-3)
        # Beta is drawn from [low, 1] or [1, high] with equal odds (official sampler).
        for name in ("betag_range", "betap_range"):
            _check_range(name, getattr(self, name), 1e-3, math.inf)
            if not getattr(self, name)[0] <= 1.0 <= getattr(self, name)[1]:
                raise ValueError(f"{name} must contain 1, got {getattr(self, name)}")
        _check_range("resize_range", self.resize_range, lo=1e-3)
        if not self.resize_range[0] <= 1.0 <= self.resize_range[1]:
            raise ValueError(f"resize_range must contain 1 (down, up), got {self.resize_range}")
        _check_range("noise_range", self.noise_range, lo=0.0)
        _check_range("poisson_scale_range", self.poisson_scale_range, lo=0.0)
        _check_range("jpeg_range", self.jpeg_range, 1.0, 100.0)


def _second_stage() -> DegradationStage:
    """The second order of the official options (weaker blur and noise, sec. 3.1)."""
    return DegradationStage(
        blur_prob=0.8,
        blur_sigma=(0.2, 1.5),
        resize_prob=(0.3, 0.4, 0.3),
        resize_range=(0.3, 1.2),
        noise_range=(1.0, 25.0),
        poisson_scale_range=(0.05, 2.5),
    )


@dataclass(frozen=True)
class RealESRGANConfig:
    """Options of the second-order degradation; defaults are the paper's / official ones.

    Attributes:
        first: the first ``blur -> resize -> noise -> JPEG`` order.
        second: the second order; its resize is relative to the LR size, as in the official code.
        final_sinc_prob: probability that a sample gets the final sinc filter (else identity).
        kernel_sizes: odd kernel sizes drawn per sample (7..21); every kernel is zero-padded to
            the largest so the batch convolves at once.
    """

    first: DegradationStage = field(default_factory=DegradationStage)
    second: DegradationStage = field(default_factory=_second_stage)
    final_sinc_prob: float = 0.8
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)

    def __post_init__(self) -> None:
        _check_prob("final_sinc_prob", self.final_sinc_prob)
        if not self.kernel_sizes or any(k < 3 or k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd sizes >= 3, got {self.kernel_sizes}")

    @property
    def kernel_pad_to(self) -> int:
        """The common (largest) kernel size every kernel is padded to."""
        return max(self.kernel_sizes)


def _split_beta(rng: np.random.Generator, beta_range: tuple[float, float]) -> float:
    """Shape parameter: ``[low, 1]`` or ``[1, high]`` with equal odds (official sampler)."""
    if rng.uniform() < 0.5:
        return float(rng.uniform(beta_range[0], 1.0))
    return float(rng.uniform(1.0, beta_range[1]))


def _sinc_kernel(rng: np.random.Generator, size: int, low_cutoff: float) -> np.ndarray:
    from basicsr.data.degradations import circular_lowpass_kernel

    return circular_lowpass_kernel(rng.uniform(low_cutoff, math.pi), size)


def random_blur_kernel(rng: np.random.Generator, stage: DegradationStage, size: int) -> np.ndarray:
    """One blur kernel of one order (Real-ESRGAN sec. 3.1 "Blur" and 3.2), ``[size, size]``.

    The distribution is that of the official ``RealESRGANDataset``: a sinc kernel with
    probability ``stage.sinc_prob`` (cutoff in ``[pi/3, pi]`` below size 13, ``[pi/5, pi]``
    above), else a kernel family from ``stage.kernel_list`` with random sigmas, rotation in
    ``[-pi, pi]`` and shape beta. basicsr's ``random_mixed_kernels`` draws from the global
    ``random`` / ``np.random`` state, which a seeded generator cannot drive, so the parameters are
    drawn here from ``rng`` and the kernels are built by basicsr's deterministic
    ``bivariate_Gaussian`` / ``bivariate_generalized_Gaussian`` / ``bivariate_plateau``.

    Returns:
        float64 kernel summing to 1.
    """
    from basicsr.data import degradations as deg

    if rng.uniform() < stage.sinc_prob:
        return _sinc_kernel(rng, size, math.pi / 3 if size < 13 else math.pi / 5)
    p = np.asarray(stage.kernel_prob, dtype=np.float64)
    kind = stage.kernel_list[int(rng.choice(len(p), p=p / p.sum()))]
    isotropic = kind in _ISOTROPIC
    sigma_x = float(rng.uniform(*stage.blur_sigma))
    if isotropic:
        sigma_y, theta = sigma_x, 0.0
    else:
        sigma_y = float(rng.uniform(*stage.blur_sigma))
        theta = float(rng.uniform(-math.pi, math.pi))
    if kind in ("iso", "aniso"):
        return deg.bivariate_Gaussian(size, sigma_x, sigma_y, theta, isotropic=isotropic)
    if kind.startswith("generalized"):
        beta = _split_beta(rng, stage.betag_range)
        return deg.bivariate_generalized_Gaussian(
            size, sigma_x, sigma_y, theta, beta, isotropic=isotropic
        )
    beta = _split_beta(rng, stage.betap_range)
    return deg.bivariate_plateau(size, sigma_x, sigma_y, theta, beta, isotropic=isotropic)


def _pad_kernel(kernel: np.ndarray, size: int) -> np.ndarray:
    pad = (size - kernel.shape[0]) // 2
    return np.pad(kernel, ((pad, pad), (pad, pad)))


def _draw_seed(generator: torch.Generator | None) -> int:
    device = generator.device if generator is not None else torch.device("cpu")
    return int(torch.randint(2**62, (1,), generator=generator, device=device))


@contextmanager
def _seeded_device_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Seed the global RNG of ``device`` for the block, then restore its state.

    basicsr's ``random_add_*_noise_pt`` take no generator; they draw the per-sample noise level,
    the gray-noise flags and the noise itself from the global RNG of the image's device.
    """
    if device.type == "cpu":
        gen = torch.default_generator
    elif device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        gen = torch.cuda.default_generators[index]
    else:
        raise ValueError(
            f"the Real-ESRGAN degradation is reproducible on CPU and CUDA only, got a batch on "
            f"{device}; move the HR batch to 'cpu' or 'cuda' first"
        )
    state = gen.get_state()
    gen.manual_seed(seed)
    try:
        yield
    finally:
        gen.set_state(state)


def _filter2d(x: Tensor, kernel: Tensor) -> Tensor:
    """Basicsr's ``filter2D``: ``[B, C, H, W]`` convolved with per-sample ``[B, K, K]`` kernels."""
    from basicsr.utils.img_process_util import filter2D

    # filter2D reshapes with .view(); DiffJPEG returns a cropped (non-contiguous) view.
    return filter2D(x.contiguous(), kernel)


def _resize(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


class RealESRGANDegradation:
    """HR batch -> Real-ESRGAN LR batch (Wang et al. 2021, sec. 3; official ``feed_data``).

    Example:
        >>> degrade = RealESRGANDegradation(scale=4)
        >>> lr = degrade(hr, generator=torch.Generator().manual_seed(0))  # hr: [B, 3, 64, 64]

    The official model degrades the USM-sharpened HR; pass ``usm_sharpen_gt(hr)`` to match it.
    """

    def __init__(self, scale: int = 4, config: RealESRGANConfig | None = None) -> None:
        """Build the degradation; basicsr is imported on the first call, not here.

        Args:
            scale: integer downscaling factor; ``H`` and ``W`` must be multiples of it.
            config: degradation options; ``None`` -> the paper's defaults.
        """
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive integer (2, 3, 4, ...), got {scale!r}")
        self.scale = scale
        self.config = config if config is not None else RealESRGANConfig()
        self._jpeg: dict[torch.device, DiffJPEG] = {}

    @property
    def min_lr_side(self) -> int:
        """Smallest LR height/width the degradation accepts.

        basicsr's ``filter2D`` pads by reflection, which needs the image to be larger than half
        the (padded) kernel: 11 px for 21-tap kernels. The final sinc filter runs at LR size, so
        the LR must be at least that large. The first-order resize is floored at the same size
        so the second blur always fits (this only binds for crops below ``11 / 0.15`` = 74 px).
        """
        return self.config.kernel_pad_to // 2 + 1

    def sample_kernels(self, batch_size: int, rng: np.random.Generator) -> tuple[Tensor, ...]:
        """Per-sample kernels of one batch, as the official ``RealESRGANDataset`` draws them.

        Returns:
            ``(blur1, blur2, sinc)``, each float32 ``[B, K, K]`` with ``K = max(kernel_sizes)``,
            each kernel summing to 1; ``sinc`` is the identity (a centred pulse) for samples
            without the final sinc filter.
        """
        cfg, k = self.config, self.config.kernel_pad_to
        sizes = cfg.kernel_sizes
        blur1, blur2, sinc = [], [], []
        for _ in range(batch_size):
            size1, size2 = int(rng.choice(sizes)), int(rng.choice(sizes))
            blur1.append(_pad_kernel(random_blur_kernel(rng, cfg.first, size1), k))
            blur2.append(_pad_kernel(random_blur_kernel(rng, cfg.second, size2), k))
            if rng.uniform() < cfg.final_sinc_prob:
                sinc.append(_pad_kernel(_sinc_kernel(rng, int(rng.choice(sizes)), math.pi / 3), k))
            else:
                pulse = np.zeros((k, k))
                pulse[k // 2, k // 2] = 1.0
                sinc.append(pulse)
        return tuple(torch.from_numpy(np.stack(ks)).float() for ks in (blur1, blur2, sinc))

    def _check(self, hr: Tensor) -> None:
        if hr.ndim != 4 or hr.shape[1] != 3 or not hr.is_floating_point():
            raise ValueError(
                f"hr must be a float [B, 3, H, W] batch in [0, 1], got {hr.dtype} {tuple(hr.shape)}"
            )
        h, w = hr.shape[-2:]
        if h % self.scale or w % self.scale:
            raise ValueError(
                f"HR size {h}x{w} is not a multiple of the scale {self.scale}; crop it with "
                "onestep.sr.data.modcrop first"
            )
        if min(h, w) // self.scale < self.min_lr_side:
            raise ValueError(
                f"HR {h}x{w} at scale {self.scale} gives a {h // self.scale}x{w // self.scale} LR; "
                f"the Real-ESRGAN degradation needs LR sides >= {self.min_lr_side} px "
                f"({self.config.kernel_pad_to}-tap kernels, reflect padding): use crops of at "
                f"least {self.min_lr_side * self.scale} px"
            )

    def _jpeger(self, device: torch.device) -> DiffJPEG:
        if device not in self._jpeg:
            from basicsr.utils import DiffJPEG

            # DiffJPEG registers module-level quantization tables as parameters: .to() on a
            # fresh instance would move the shared tables, so each device gets a deep copy.
            jpeg = copy.deepcopy(DiffJPEG(differentiable=False)).to(device)
            self._jpeg[device] = jpeg.requires_grad_(False)
        return self._jpeg[device]

    def _compress(self, x: Tensor, stage: DegradationStage, rng: np.random.Generator) -> Tensor:
        quality = rng.uniform(*stage.jpeg_range, size=x.shape[0])
        return self._jpeger(x.device)(x.clamp(0.0, 1.0), quality=x.new_tensor(quality))

    def _order(
        self,
        x: Tensor,
        kernel: Tensor,
        stage: DegradationStage,
        rng: np.random.Generator,
        base: tuple[int, int],
        min_side: int,
    ) -> Tensor:
        """Blur -> resize -> noise of one order (its JPEG is left to the caller).

        The resize factor applies to ``base`` (the input size in the first order, the LR size in
        the second, as in the official code); sides are floored at ``min_side``.
        """
        from basicsr.data.degradations import (
            random_add_gaussian_noise_pt,
            random_add_poisson_noise_pt,
        )

        if rng.uniform() < stage.blur_prob:
            x = _filter2d(x, kernel)
        direction = rng.choice(("up", "down", "keep"), p=np.asarray(stage.resize_prob))
        low, high = stage.resize_range
        if direction == "up":
            factor = rng.uniform(1.0, high)
        elif direction == "down":
            factor = rng.uniform(low, 1.0)
        else:
            factor = 1.0
        size = (max(min_side, int(base[0] * factor)), max(min_side, int(base[1] * factor)))
        x = _resize(x, size, str(rng.choice(_RESIZE_MODES)))
        # basicsr annotates gray_prob as int by its default (0); it is a probability.
        if rng.uniform() < stage.gaussian_noise_prob:
            return random_add_gaussian_noise_pt(
                x,
                sigma_range=stage.noise_range,
                gray_prob=stage.gray_noise_prob,  # pyright: ignore[reportArgumentType]
                clip=True,
            )
        return random_add_poisson_noise_pt(
            x,
            scale_range=stage.poisson_scale_range,
            gray_prob=stage.gray_noise_prob,  # pyright: ignore[reportArgumentType]
            clip=True,
        )

    @torch.no_grad()
    def __call__(self, hr: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Degrade an HR batch into its LR batch.

        Args:
            hr: ``[B, 3, H, W]`` float in [0, 1], ``H`` and ``W`` multiples of ``scale``, on CPU
                or CUDA.
            generator: source of the one seed all draws derive from (any device); ``None`` ->
                torch's global CPU RNG.

        Returns:
            ``[B, 3, H / scale, W / scale]`` in ``hr``'s dtype and device, clamped to [0, 1] and
            rounded to 8-bit levels (``round(255 x) / 255``), as the official ``feed_data``.
        """
        self._check(hr)
        h, w = hr.shape[-2:]
        lr_size = (h // self.scale, w // self.scale)
        rng = np.random.default_rng(_draw_seed(generator))
        x = hr.float()
        blur1, blur2, sinc = (k.to(x.device) for k in self.sample_kernels(hr.shape[0], rng))
        cfg = self.config
        with _seeded_device_rng(x.device, int(rng.integers(2**62))):
            x = self._order(x, blur1, cfg.first, rng, (h, w), min_side=self.min_lr_side)
            x = self._compress(x, cfg.first, rng)
            x = self._order(x, blur2, cfg.second, rng, lr_size, min_side=1)
            mode = str(rng.choice(_RESIZE_MODES))
            if rng.uniform() < 0.5:  # [resize + sinc] then JPEG
                x = self._compress(_filter2d(_resize(x, lr_size, mode), sinc), cfg.second, rng)
            else:  # JPEG then [resize + sinc]
                x = _filter2d(_resize(self._compress(x, cfg.second, rng), lr_size, mode), sinc)
        return ((x.clamp(0.0, 1.0) * 255.0).round() / 255.0).to(hr.dtype)


_USM: dict[torch.device, USMSharp] = {}


def usm_sharpen_gt(hr: Tensor, weight: float = 0.5, threshold: float = 10.0) -> Tensor:
    """Unsharp-masked HR target, as Real-ESRGAN trains on (basicsr ``USMSharp``, radius 50).

    The official ``RealESRGANModel`` degrades the sharpened GT to make the LR and, with its
    default options (``l1_gt_usm``, ``percep_gt_usm``, ``gan_gt_usm``: true), computes the L1,
    perceptual and GAN losses against it.

    Args:
        hr: ``[B, 3, H, W]`` float in [0, 1], ``H, W > 25`` (the 51-tap blur pads by reflection).
        weight: sharpening strength.
        threshold: residuals below this (0-255 scale) are left unsharpened.

    Returns:
        Same shape, dtype and device, in [0, 1].
    """
    if hr.ndim != 4 or min(hr.shape[-2:]) <= 25:
        raise ValueError(f"hr must be [B, C, H, W] with H, W > 25, got {tuple(hr.shape)}")
    device = hr.device
    if device not in _USM:
        from basicsr.utils import USMSharp

        _USM[device] = USMSharp().to(device)
    return _USM[device](hr.float(), weight=weight, threshold=threshold).to(hr.dtype)

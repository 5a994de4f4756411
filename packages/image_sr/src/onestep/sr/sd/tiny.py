"""A tiny random-weight Stable Diffusion folder for tests, and SD 2.1-base configs for benchmarks.

:func:`write_tiny_sd_folder` writes the SD 2.1-base / SD-Turbo layout (``model_index.json``,
``unet/``, ``vae/``, ``scheduler/``, ``text_encoder/``, ``tokenizer/``) with models small enough
for CPU tests, through ``StableDiffusionPipeline.save_pretrained`` so that both
:func:`~onestep.sr.sd.folder.load_sd_folder` and diffusers' own
``StableDiffusionPipeline.from_pretrained`` read it. The shapes follow SD where it matters to the
code under test: 4 latent channels, a VAE that downsamples by 8, a cross-attention UNet with linear
projections (as SD 2.x) whose context width is the text encoder's, and SD's 1000-step
``scaled_linear`` schedule (betas 0.00085..0.012).

:func:`sd21_unet_config` and :func:`sd21_vae_config` give the real SD 2.1-base architectures, for
GPU benchmarks with random weights (about 866M and 84M parameters: never build them in CPU tests).
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch

__all__ = [
    "TINY_MAX_LENGTH",
    "sd21_unet_config",
    "sd21_vae_config",
    "tiny_unet_config",
    "tiny_vae_config",
    "write_tiny_sd_folder",
]

#: SD's VAE latent scale (``AutoencoderKL.config.scaling_factor`` of SD 1.x / 2.x).
SD_SCALING_FACTOR = 0.18215
#: token length of the tiny tokenizer and text encoder (SD: 77).
TINY_MAX_LENGTH = 16
_TEXT_WIDTH = 16
_SPECIALS = ["<|startoftext|>", "<|endoftext|>"]
_CHARS = list(string.ascii_lowercase + string.digits + ",.!?'-")
# Without merges, CLIP's BPE spells every word out: "cat" -> "c", "a", "t</w>".
_VOCAB = _SPECIALS + _CHARS + [c + "</w>" for c in _CHARS]


def sd21_unet_config() -> dict[str, Any]:
    """The ``UNet2DConditionModel`` config of SD 2.1-base (``unet/config.json``), ~866M params.

    Returns:
        Keyword arguments for ``UNet2DConditionModel(**config)``: 4 levels of 320/640/1280/1280
        channels (3 downsamplings), cross-attention on the first three, 1024-wide OpenCLIP-H
        context, linear projections in the transformer blocks, 64x64 latents (512x512 images).
    """
    return {
        "act_fn": "silu",
        "attention_head_dim": [5, 10, 20, 20],
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 1024,
        "down_block_types": [
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ],
        "downsample_padding": 1,
        "dual_cross_attention": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-5,
        "norm_num_groups": 32,
        "num_class_embeds": None,
        "only_cross_attention": False,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": [
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
        ],
        "upcast_attention": False,
        "use_linear_projection": True,
    }


def sd21_vae_config() -> dict[str, Any]:
    """The ``AutoencoderKL`` config of SD 2.1-base (``vae/config.json``), ~84M params, factor 8."""
    return {
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": 768,
        "scaling_factor": SD_SCALING_FACTOR,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
    }


def tiny_unet_config(cross_attention_dim: int = _TEXT_WIDTH) -> dict[str, Any]:
    """A two-level SD-layout UNet (one downsampling), 52k params.

    Cross-attention on the first level as in SD's ``CrossAttnDownBlock2D`` / ``DownBlock2D``
    split, linear projections as SD 2.x, ``cross_attention_dim`` the text encoder's width.
    """
    return {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [8, 16],
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "cross_attention_dim": cross_attention_dim,
        "attention_head_dim": [2, 4],
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "use_linear_projection": True,
    }


def tiny_vae_config() -> dict[str, Any]:
    """A four-level ``AutoencoderKL`` (3 downsamplings: factor 8 like SD), 4 latent channels."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [4, 4, 8, 8],
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "sample_size": 32,
        "scaling_factor": SD_SCALING_FACTOR,
    }


def char_tokenizer(folder: Path, max_length: int = TINY_MAX_LENGTH) -> Any:
    """A CLIP BPE tokenizer over lowercase letters, digits and a little punctuation."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(_VOCAB)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length
    )


def char_text_encoder(
    width: int = _TEXT_WIDTH,
    heads: int = 2,
    intermediate: int = 2 * _TEXT_WIDTH,
    max_length: int = TINY_MAX_LENGTH,
) -> Any:
    """A one-layer random CLIP text encoder over :func:`char_tokenizer`'s vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(_VOCAB),
        hidden_size=width,
        intermediate_size=intermediate,
        num_hidden_layers=1,
        num_attention_heads=heads,
        max_position_embeddings=max_length,
        projection_dim=width,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModel(config)


def save_sd_pipeline(
    out: Path,
    unet: Any,
    vae: Any,
    text_encoder: Any,
    prediction_type: Literal["epsilon", "v_prediction"],
    max_length: int = TINY_MAX_LENGTH,
) -> Path:
    """Save a Stable Diffusion pipeline folder of these parts with SD 2.1's training schedule.

    The scheduler is DDPM with SD 2.1's scaled-linear betas (its folder ships a PNDM/DDIM config
    with the same betas); the tokenizer is :func:`char_tokenizer`; no safety checker.
    """
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=prediction_type,
        clip_sample=False,
        steps_offset=1,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = char_tokenizer(Path(tmp), max_length)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,  # pyright: ignore[reportArgumentType]
        safety_checker=None,  # pyright: ignore[reportArgumentType]
        feature_extractor=None,  # pyright: ignore[reportArgumentType]
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out), safe_serialization=True)
    return out


def write_tiny_sd_folder(
    path: str | Path,
    *,
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon",
    seed: int = 0,
) -> Path:
    """Write a tiny random-weight Stable Diffusion pipeline folder.

    Sizes: UNet 52k params (:func:`tiny_unet_config`), VAE 18k (:func:`tiny_vae_config`,
    factor 8), CLIP text encoder 4k (16 wide, 1 layer, 16 tokens). A 32x32 image is a 4x4x4
    latent; the whole one-step SR forward of a 2x3x8x8 LR batch takes ~50 ms on one CPU thread.

    Args:
        path: a new or empty folder.
        prediction_type: the UNet's (and scheduler's) parametrisation: ``"epsilon"`` as SD
            2.1-base and SD-Turbo, ``"v_prediction"`` as SD 2.1 (768).
        seed: weights are drawn from this seed (the global RNG is left as it was).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: for another ``prediction_type``.
        FileExistsError: if ``path`` exists and is not empty.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(
            f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}"
        )
    out = Path(path)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; pick a new or empty folder")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**tiny_unet_config())
        vae = AutoencoderKL(**tiny_vae_config())
        text_encoder = char_text_encoder()
    return save_sd_pipeline(out, unet, vae, text_encoder, prediction_type)

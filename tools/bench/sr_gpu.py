"""OSEDiff-style training throughput and peak memory on an SD-2.1-shaped model (issue #5).

    uv run python tools/bench/sr_gpu.py                        # GPU: 512², batch 1, bf16
    uv run python tools/bench/sr_gpu.py --device cpu --size 64 --steps 1 --warmup 0

Writes a Stable Diffusion folder with **random weights** in the real SD 2.1 shapes (UNet of
``sd21_unet_config()``, ~866M parameters; VAE of ``sd21_vae_config()``, ~84M; SD 2.1's
v-prediction ``scaled_linear`` schedule), builds ``osediff_from_sd_folder`` on it (student: UNet +
VAE encoder with rank-4 LoRA; teacher: the frozen UNet with CFG 7.5, i.e. two UNet passes per
call; fake score: a rank-4 LoRA on a third copy of the UNet) and times whole training iterations
(one fake-score update + one student update, ``OSEDiffVSD.training_step``) inside a Lightning
``fit`` on random HR images and their bicubic LR.

The text encoder is a one-layer, 1024-wide CLIP text model over a character vocabulary (SD 2.1's
is the 24-layer OpenCLIP-H): it only produces the 1024-d, 77-token prompt embedding the UNet
cross-attends to, once, before training, so its size does not enter the timings.

Precision (``--dtype``):

- ``bf16`` (default): frozen weights (UNet, VAE, text encoder) stored in bfloat16, LoRA
  parameters and their AdamW state in float32 (as diffusers' LoRA scripts'
  ``cast_training_params``), forward and backward under Lightning's ``bf16-mixed`` autocast.
- ``fp32``: every weight in float32, no autocast (TF32 as torch's defaults leave it; reported).

The JSON names what ran: the dtypes actually found on the frozen UNet and on the LoRA parameters,
Lightning's precision, the attention processor. Timing: ``--warmup`` iterations first, then
``--steps`` timed ones with the device synchronised at each iteration's start and end; ``it_per_s``
is ``steps`` over the wall time from the first timed iteration's start to the last one's end
(Lightning's loop overhead between iterations included), ``s_per_it_median`` the median of the
single iterations. ``peak_gib`` is ``torch.cuda.max_memory_allocated`` over the whole fit.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from onestep.core.lora import lora_parameters
from onestep.sr.data import bicubic_downsample
from onestep.sr.methods.osediff import OSEDiffVSD
from onestep.sr.sd.osediff import osediff_from_sd_folder
from onestep.sr.sd.tiny import (
    char_text_encoder,
    save_sd_pipeline,
    sd21_unet_config,
    sd21_vae_config,
)

OnBuilt = Callable[[OSEDiffVSD], None]
SCALE = 4  # OSEDiff's SR factor
MAX_LENGTH = 77  # SD's token length
TEXT_WIDTH = 1024  # SD 2.x's cross-attention width (OpenCLIP-H)
HEAD_DIM = 64  # SD 2.x's attention head width (its config's attention_head_dim is a head count)
# weights' dtype, Lightning precision per --dtype (see the module docstring).
PRECISIONS: dict[str, tuple[torch.dtype, str]] = {
    "bf16": (torch.bfloat16, "bf16-mixed"),
    "fp32": (torch.float32, "32-true"),
}
# Marks a folder this script wrote, with the shapes it holds, so --folder can reuse it.
STAMP = "sr_gpu_folder.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--size", type=int, default=512, help="HR side in pixels (LR: size / 4)")
    parser.add_argument("--batch", type=int, default=1, help="images per iteration")
    parser.add_argument("--steps", type=int, default=10, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument(
        "--dtype",
        choices=sorted(PRECISIONS),
        default="bf16",
        help="bf16: frozen weights bf16, LoRA fp32, bf16 autocast; fp32: all fp32",
    )
    parser.add_argument(
        "--folder",
        type=Path,
        default=None,
        help="write the random SD folder here and reuse it on the next run (none: a temporary "
        "folder, deleted afterwards)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("runs/bench/sr_gpu/result.json"),
        help="the JSON result (also printed)",
    )
    parser.add_argument("--seed", type=int, default=0, help="weights' and images' seed")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    # Shrinks the UNet's widths (and the VAE's with --vae-scale) to check the code path on a CPU.
    parser.add_argument("--unet-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--vae-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.size % 64:
        parser.error(f"--size must be a multiple of 64 (VAE x UNet downsampling), got {args.size}")
    if min(args.batch, args.steps) < 1 or args.warmup < 0:
        parser.error("--batch and --steps must be >= 1 and --warmup >= 0")
    if not (0 < args.unet_scale <= 1 and 0 < args.vae_scale <= 1):
        parser.error("--unet-scale and --vae-scale must lie in (0, 1]")
    return args


# -- the random SD 2.1-shaped folder ---------------------------------------------------------------


def unet_config(scale: float = 1.0) -> dict[str, Any]:
    """SD 2.1-base's UNet config; ``scale < 1`` narrows every level, keeping 64-wide heads."""
    config = sd21_unet_config()
    if scale == 1.0:
        return config
    widths = [
        max(HEAD_DIM, HEAD_DIM * round(c * scale / HEAD_DIM)) for c in config["block_out_channels"]
    ]
    return config | {
        "block_out_channels": widths,
        "attention_head_dim": [c // HEAD_DIM for c in widths],  # diffusers: the number of heads
    }


def vae_config(scale: float = 1.0) -> dict[str, Any]:
    """SD 2.1's VAE config; ``scale < 1`` narrows every level (multiples of 32 groups)."""
    config = sd21_vae_config()
    if scale == 1.0:
        return config
    groups = config["norm_num_groups"]
    widths = [max(groups, groups * round(c * scale / groups)) for c in config["block_out_channels"]]
    return config | {"block_out_channels": widths}


def write_sd21_folder(path: Path, unet_scale: float = 1.0, vae_scale: float = 1.0, seed: int = 0):
    """Write (or reuse) a random-weight SD 2.1-shaped pipeline folder at ``path``.

    Reuses ``path`` when this script wrote it with the same shapes and seed; raises if it holds
    anything else.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    stamp = {"unet": unet_config(unet_scale), "vae": vae_config(vae_scale), "seed": seed}
    if (path / STAMP).is_file():
        if json.loads((path / STAMP).read_text()) == json.loads(json.dumps(stamp)):
            return
        raise FileExistsError(
            f"{path} holds a benchmark folder with other shapes or seed; delete it or pick "
            "another --folder"
        )
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} exists and is not empty; pick a new or empty --folder")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**stamp["unet"])
        vae = AutoencoderKL(**stamp["vae"])
        # One CLIP layer, 1024 wide: the width SD 2.x's UNet cross-attends to.
        text_encoder = char_text_encoder(TEXT_WIDTH, TEXT_WIDTH // HEAD_DIM, TEXT_WIDTH, MAX_LENGTH)
    # SD 2.1 (768): v-prediction.
    save_sd_pipeline(path, unet, vae, text_encoder, "v_prediction", MAX_LENGTH)
    (path / STAMP).write_text(json.dumps(stamp, indent=1))


# -- the module and the timed fit ------------------------------------------------------------------


def build_module(folder: Path, dtype: str) -> OSEDiffVSD:
    """``osediff_from_sd_folder`` with frozen weights in ``dtype`` and float32 LoRA parameters."""
    weights, _ = PRECISIONS[dtype]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*is an instance of `nn.Module`.*")
        module = osediff_from_sd_folder(folder, scale=SCALE, dtype=weights)
    # peft makes LoRA in its base layer's dtype; AdamW's small steps need float32 (diffusers'
    # cast_training_params does the same). The Parameter objects stay, only their data changes.
    for p in lora_parameters(module):
        p.data = p.data.float()
    return module


class RandomPairs(Dataset):
    """Uniform-noise HR images ``[3, size, size]`` and their bicubic LR, drawn per index."""

    def __init__(self, size: int, length: int, seed: int) -> None:
        self.size, self.length, self.seed = size, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        hr = torch.rand(3, self.size, self.size, generator=gen)
        return {"hr": hr, "lr": bicubic_downsample(hr, SCALE)}


class IterationTimer(L.Callback):
    """Wall time of every training iteration (device synchronised) and the logged losses."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.losses: list[dict[str, float]] = []

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int):
        self.starts.append(self._sync())

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ):
        self.ends.append(self._sync())
        self.losses.append(
            {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("loss/")}
        )


def fit_and_time(module: OSEDiffVSD, args: argparse.Namespace) -> dict[str, Any]:
    """Lightning ``fit`` for ``warmup + steps`` iterations; timings, memory, losses."""
    device = torch.device(args.device)
    _, precision = PRECISIONS[args.dtype]
    n = args.warmup + args.steps
    timer = IterationTimer(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    trainer = L.Trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=[device.index or 0] if cuda else 1,
        precision=precision,  # pyright: ignore[reportArgumentType]
        max_epochs=1,
        limit_train_batches=n,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    with warnings.catch_warnings():
        # Expected here: in-memory data, frozen parts in eval mode, no validation data.
        for message in ("does not have many workers", "in eval mode", "no `val_dataloader`"):
            warnings.filterwarnings("ignore", f".*{message}.*")
        data = RandomPairs(args.size, n * args.batch, args.seed)
        trainer.fit(module, DataLoader(data, batch_size=args.batch))
    if len(timer.ends) != n:
        raise RuntimeError(f"expected {n} iterations, Lightning ran {len(timer.ends)}")
    timed = range(args.warmup, n)
    wall = timer.ends[-1] - timer.starts[args.warmup]
    out: dict[str, Any] = {
        "it_per_s": args.steps / wall,
        "images_per_s": args.steps * args.batch / wall,
        "s_per_it": wall / args.steps,
        "s_per_it_median": statistics.median(timer.ends[i] - timer.starts[i] for i in timed),
        "s_per_it_each": [round(timer.ends[i] - timer.starts[i], 4) for i in range(n)],
        "losses_last": timer.losses[-1],
        "losses_finite": all(math.isfinite(v) for step in timer.losses for v in step.values()),
        "precision": precision,
    }
    if cuda:
        gib = 2.0**30
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / gib
        out["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / gib
    return out


def describe(module: OSEDiffVSD, folder: Path) -> dict[str, Any]:
    """What will run: sizes, the dtypes found on the weights, trainable counts, attention."""
    student: Any = module.student
    unet = student.super_resolver.student.unet
    vae = student.super_resolver.student.vae
    embeds = module.prompt_embeds
    width = unet.config.cross_attention_dim
    if embeds is None or tuple(embeds.shape) != (1, MAX_LENGTH, width):
        shape = None if embeds is None else tuple(embeds.shape)
        raise RuntimeError(f"prompt embedding {shape} does not fit cross-attention width {width}")
    frozen = next(p for p in unet.parameters() if not p.requires_grad)
    lora = next(lora_parameters(module.student))
    processors = {type(p).__name__ for p in unet.attn_processors.values()}
    scheduler = folder / "scheduler" / "scheduler_config.json"

    def base_params(model: Any) -> int:
        return sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)

    return {
        "unet_params": base_params(unet),
        "vae_params": base_params(vae),
        "prediction_type": json.loads(scheduler.read_text())["prediction_type"],
        "prompt_embeds": list(embeds.shape),
        "weights_dtype": str(frozen.dtype).removeprefix("torch."),
        "lora_dtype": str(lora.dtype).removeprefix("torch."),
        "student_trainable": sum(p.numel() for p in lora_parameters(module.student)),
        "fake_score_trainable": sum(p.numel() for p in lora_parameters(module.fake_score)),
        "perceptual": module.perceptual_name,
        "attention": sorted(processors),
        "gradient_checkpointing": bool(getattr(unet, "is_gradient_checkpointing", False)),
    }


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    else:
        info["gpu"] = None
    return info


def run(args: argparse.Namespace, folder: Path, on_built: OnBuilt | None = None) -> dict[str, Any]:
    """Write / reuse the folder, build the module, fit and time it; the result as a dict."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but torch sees no CUDA device; pass --device cpu")
    t0 = time.perf_counter()
    write_sd21_folder(folder, args.unet_scale, args.vae_scale, args.seed)
    t1 = time.perf_counter()
    module = build_module(folder, args.dtype)
    t2 = time.perf_counter()
    if on_built is not None:
        on_built(module)
    result = {
        "bench": "osediff_train_step",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resolution": args.size,
        "lr_resolution": args.size // SCALE,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "dtype": args.dtype,
        "unet_scale": args.unet_scale,
        "vae_scale": args.vae_scale,
        "device": str(device),
        **machine(device),
        **describe(module, folder),
    }
    result |= fit_and_time(module, args)
    result["setup_s"] = {"folder": round(t1 - t0, 1), "build": round(t2 - t1, 1)}
    return result


def markdown_row(report: dict[str, Any]) -> str:
    """A BENCHMARKS.md table row: device, resolution, batch, precision, speed, peak memory."""
    peak = report.get("peak_gib")
    cells = [
        report["gpu"] or f"CPU ({report['cpu_threads']} threads)",
        f"{report['resolution']}²",
        str(report["batch"]),
        f"{report['weights_dtype']} weights, {report['precision']}",
        f"{report['it_per_s']:.3f}",
        f"{report['s_per_it_median']:.3f}",
        "-" if peak is None else f"{peak:.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None, on_built: OnBuilt | None = None) -> dict[str, Any]:
    """Run the benchmark, print the JSON and write it to ``--output``; return it.

    Args:
        argv: command-line arguments (``None``: none, i.e. the defaults).
        on_built: called with the module once built, before training (tests snapshot weights).
    """
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.folder is not None:
        report = run(args, args.folder, on_built)
    else:
        with tempfile.TemporaryDirectory(prefix="sr_gpu_") as tmp:
            report = run(args, Path(tmp) / "sd21", on_built)
    report["command"] = " ".join(["uv run python tools/bench/sr_gpu.py", *(argv or [])])
    text = json.dumps(report, indent=1)
    print(text)
    print(markdown_row(report))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    return report


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])

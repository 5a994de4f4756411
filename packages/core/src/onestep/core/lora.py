"""LoRA through peft: add, freeze all but LoRA, merge, save and load adapters.

Low-rank adaptation (Hu et al. 2022, eq. 3) replaces a frozen weight ``W`` by
``W + (alpha / r) B A`` with ``A`` of shape ``[r, in]`` and ``B`` of shape ``[out, r]``; ``B``
starts at zero so a fresh adapter leaves the model unchanged. These helpers work on diffusers
models (through their ``add_adapter``) and on plain ``nn.Module`` objects (through peft's
``inject_adapter_in_model``, which swaps layers in place and keeps the module's class and
``forward`` signature).

Typical use for a student initialised from its teacher::

    student = copy.deepcopy(teacher.net)
    add_lora(student, rank=8)
    n_trainable = freeze_all_but_lora(student)
    ...train...
    save_lora(student, "runs/lora")  # only the adapter weights + their config
    merge_lora(student)  # fold the adapter into the weights for export
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from peft import set_peft_model_state_dict as _set_peft_state
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = [
    "DIFFUSERS_ATTENTION_TARGETS",
    "PLAIN_TARGET_TYPES",
    "add_lora",
    "freeze_all_but_lora",
    "has_lora",
    "load_lora",
    "lora_parameters",
    "merge_lora",
    "resolve_targets",
    "save_lora",
]

#: ``target_modules="auto"`` on a diffusers model: the attention projections of every
#: ``Attention`` block (UNets and DiT-style transformers alike).
DIFFUSERS_ATTENTION_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
#: ``target_modules="auto"`` on any other module: every layer of these types.
PLAIN_TARGET_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
_LORA_KEY = "lora_"


def _is_diffusers_model(model: nn.Module) -> bool:
    from diffusers import ModelMixin

    return isinstance(model, ModelMixin)


def _matches(name: str, targets: Sequence[str] | str) -> bool:
    """Peft's rule: a regex must fully match; a list entry matches a name or its ``.``-suffix."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def resolve_targets(
    model: nn.Module, target_modules: Sequence[str] | str | None = "auto"
) -> list[str]:
    """Names of the modules that LoRA will wrap.

    Args:
        model: the model to adapt.
        target_modules: ``"auto"`` or ``None`` for :data:`DIFFUSERS_ATTENTION_TARGETS` on a
            diffusers model and every :data:`PLAIN_TARGET_TYPES` layer otherwise; a list of module
            names (each matches a full name or a ``.``-suffix, as in peft); or a regex that must
            fully match.

    Returns:
        The full names of the matching modules, in ``named_modules`` order.

    Raises:
        ValueError: if no supported layer matches.
    """
    if target_modules is None or target_modules == "auto":
        if _is_diffusers_model(model):
            return resolve_targets(model, list(DIFFUSERS_ATTENTION_TARGETS))
        names = [n for n, m in model.named_modules() if n and isinstance(m, PLAIN_TARGET_TYPES)]
        what = f"no {', '.join(t.__name__ for t in PLAIN_TARGET_TYPES)} layer"
    else:
        names = [
            n
            for n, m in model.named_modules()
            if n and _matches(n, target_modules) and isinstance(m, PLAIN_TARGET_TYPES)
        ]
        what = f"no Linear/Conv layer named like {target_modules!r}"
    if not names:
        raise ValueError(
            f"add_lora: {what} in {type(model).__name__}; pass target_modules=[...] with names "
            "from model.named_modules() (e.g. a UNet without attention blocks has no to_q/to_k)"
        )
    return names


def has_lora(model: nn.Module) -> bool:
    """Whether ``model`` holds any peft (LoRA) layer."""
    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


def add_lora(
    model: nn.Module,
    *,
    rank: int = 4,
    alpha: float | None = None,
    target_modules: Sequence[str] | str | None = "auto",
    dropout: float = 0.0,
    adapter_name: str = "default",
) -> nn.Module:
    """Wrap layers of ``model`` in LoRA adapters, in place (Hu et al. 2022, eq. 3).

    Args:
        model: a diffusers model (``ModelMixin``) or any ``nn.Module``.
        rank: LoRA rank ``r`` (> 0).
        alpha: LoRA scale numerator; the update is ``(alpha / r) B A``. Defaults to ``rank``
            (scale 1).
        target_modules: which layers to adapt; see :func:`resolve_targets`.
        dropout: dropout on the LoRA branch input.
        adapter_name: name of the adapter (several may coexist; the newest is active).

    Returns:
        ``model`` itself, with the new layers. Its base weights are untouched; LoRA ``B`` starts at
        zero, so outputs are unchanged until training. Call :func:`freeze_all_but_lora` next.

    Raises:
        ValueError: for ``rank <= 0``, a dropout outside [0, 1), an existing adapter name or no
            matching target layer.
    """
    if not isinstance(rank, int) or rank <= 0:
        raise ValueError(f"add_lora: rank must be a positive int, got {rank!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"add_lora: dropout must lie in [0, 1), got {dropout}")
    config = LoraConfig(
        r=rank,
        lora_alpha=float(rank if alpha is None else alpha),  # pyright: ignore[reportArgumentType]
        lora_dropout=dropout,
        target_modules=resolve_targets(model, target_modules),
        init_lora_weights=True,
    )
    return _inject(model, config, adapter_name)


def _inject(model: nn.Module, config: LoraConfig, adapter_name: str) -> nn.Module:
    configs = getattr(model, "peft_config", None) or {}
    if adapter_name in configs:
        raise ValueError(
            f"add_lora: {type(model).__name__} already has an adapter named {adapter_name!r}; "
            "pass another adapter_name or merge_lora() first"
        )
    if callable(getattr(model, "add_adapter", None)) and _is_diffusers_model(model):
        model.add_adapter(config, adapter_name=adapter_name)  # pyright: ignore[reportCallIssue]
    else:
        inject_adapter_in_model(config, model, adapter_name=adapter_name)
        # peft's state-dict helpers read the config from here, as on a diffusers model.
        setattr(model, "peft_config", {**configs, adapter_name: config})  # noqa: B010
    return model


def lora_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The LoRA parameters of ``model`` (every parameter whose name contains ``lora_``)."""
    for name, p in model.named_parameters():
        if _LORA_KEY in name:
            yield p


def freeze_all_but_lora(model: nn.Module) -> int:
    """Make only the LoRA parameters trainable.

    Returns:
        The number of trainable parameters left.

    Raises:
        ValueError: if ``model`` has no LoRA parameter (call :func:`add_lora` first).
    """
    n = 0
    for name, p in model.named_parameters():
        trainable = _LORA_KEY in name
        p.requires_grad_(trainable)
        n += p.numel() if trainable else 0
    if n == 0:
        raise ValueError(f"{type(model).__name__} has no LoRA parameters; call add_lora() first")
    return n


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the active LoRA adapters into the base weights and remove every LoRA layer, in place.

    ``W <- W + (alpha / r) B A`` for each adapted layer, so outputs are unchanged (up to
    round-off) and the model is a plain model again (saveable with ``save_pretrained``).
    Inactive adapters are dropped.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: if ``model`` has no LoRA layer.
    """
    tuned = [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    if not tuned:
        raise ValueError(f"merge_lora: {type(model).__name__} has no LoRA layer to merge")
    for name, layer in tuned:
        layer.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    if hasattr(model, "_hf_peft_config_loaded"):
        setattr(model, "_hf_peft_config_loaded", False)  # noqa: B010
    return model


def save_lora(model: nn.Module, path: str | Path, *, adapter_name: str = "default") -> Path:
    """Save one adapter: ``path/adapter_model.safetensors`` plus ``path/adapter_config.json``.

    Only the LoRA weights are written (keys without the adapter name, peft's layout), so the
    folder is small and loads onto any fresh copy of the base model with :func:`load_lora`.

    Returns:
        The folder written.

    Raises:
        ValueError: if ``model`` has no adapter named ``adapter_name``.
    """
    config = _config(model, adapter_name)
    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    config_json = json.dumps(config.to_dict(), default=sorted)
    save_file(state, out / WEIGHTS_NAME, metadata={"format": "pt", "lora_config": config_json})
    config.save_pretrained(str(out))
    return out


def load_lora(model: nn.Module, path: str | Path, *, adapter_name: str = "default") -> nn.Module:
    """Add the adapter saved by :func:`save_lora` at ``path`` to a fresh base ``model``, in place.

    Returns:
        ``model`` itself with the adapter loaded and active.

    Raises:
        FileNotFoundError: if ``path`` lacks the weights or the config.
        ValueError: if the saved weights do not fit ``model`` (another architecture).
    """
    folder = Path(path)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"load_lora: no {name} in {folder}; save with save_lora() first"
            )
    config = LoraConfig.from_pretrained(str(folder))
    if not isinstance(config, LoraConfig):
        raise ValueError(f"load_lora: {folder / CONFIG_NAME} is not a LoRA config")
    _inject(model, config, adapter_name)
    state = load_file(folder / WEIGHTS_NAME)
    result = _set_peft_state(model, state, adapter_name=adapter_name)
    missing = [k for k in result.missing_keys if _LORA_KEY in k]
    if result.unexpected_keys or missing:
        raise ValueError(
            f"load_lora: weights in {folder} do not fit {type(model).__name__}: "
            f"unexpected {result.unexpected_keys[:5]}, missing {missing[:5]}; load onto the same "
            "base architecture they were trained on"
        )
    return model


def _config(model: nn.Module, adapter_name: str) -> LoraConfig:
    configs = getattr(model, "peft_config", None) or {}
    if adapter_name not in configs:
        raise ValueError(
            f"{type(model).__name__} has no LoRA adapter {adapter_name!r} "
            f"(adapters: {sorted(configs)}); call add_lora() first"
        )
    return configs[adapter_name]

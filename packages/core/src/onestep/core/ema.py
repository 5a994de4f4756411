"""Exponential moving averages of weights: a Lightning callback and an in-place update.

``theta_ema <- d theta_ema + (1 - d) theta`` after every optimizer step (the EMA generator most
distillation papers evaluate). Consistency methods use :func:`ema_update_` directly for their
target network (Song et al. 2023, consistency distillation, Algorithm 2:
``theta^- <- mu theta^- + (1 - mu) theta``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

__all__ = ["EMA", "ema_update_"]


def _check_decay(decay: float) -> float:
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must lie in [0, 1], got {decay}; typical values 0.99-0.9999")
    return float(decay)


@torch.no_grad()
def ema_update_(target: nn.Module, source: nn.Module, decay: float) -> None:
    """In place: ``target <- decay * target + (1 - decay) * source``; buffers are copied.

    Args:
        target: the averaged copy (e.g. a consistency model's target network ``theta^-``).
        source: the module being trained; same parameter names and shapes as ``target``.
        decay: ``mu`` in [0, 1]; 1 freezes ``target``, 0 copies ``source``.
    """
    decay = _check_decay(decay)
    src_params = dict(source.named_parameters())
    tgt_params = dict(target.named_parameters())
    if src_params.keys() != tgt_params.keys():
        missing = sorted(src_params.keys() ^ tgt_params.keys())
        raise ValueError(f"target and source differ in parameters: {missing[:5]}")
    for name, tgt in tgt_params.items():
        src = src_params[name].detach()
        if src.shape != tgt.shape:
            raise ValueError(f"shape mismatch for {name!r}: {tuple(tgt.shape)} vs {src.shape}")
        tgt.lerp_(src.to(tgt.dtype), 1.0 - decay)
    src_buffers = dict(source.named_buffers())
    for name, buf in target.named_buffers():
        buf.copy_(src_buffers[name])


def _tensors(module: nn.Module) -> Iterator[tuple[str, Tensor, bool]]:
    """``(name, tensor, averaged)`` for every parameter (averaged) and buffer (copied)."""
    for name, p in module.named_parameters():
        yield name, p, True
    for name, b in module.named_buffers():
        yield name, b, False


def _shadow_copy(t: Tensor) -> Tensor:
    """A detached copy; half-precision floats are kept in float32 so small steps still count."""
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.detach().to(torch.float32)
    return t.detach().clone()


class EMA(Callback):
    """Keep an exponential moving average of a LightningModule's (sub)module weights.

    After each optimizer step (checked in ``on_train_batch_end`` through ``trainer.global_step``,
    so gradient accumulation and manual optimization with several optimizers count one update per
    batch that stepped) the average moves towards the live weights; buffers are copied. The
    average is part of the callback's checkpoint state, so a resumed run continues the same
    average exactly. Half-precision weights are averaged in float32.

    Args:
        decay: EMA decay ``d``; the average's horizon is about ``1 / (1 - d)`` updates.
        module_attr: attribute of the LightningModule to average (dotted paths allowed, e.g.
            ``"student.net"``); ``None`` averages the whole LightningModule (including any frozen
            teacher, so prefer naming the student).
        warmup: use ``min(d, (1 + n) / (10 + n))`` at update ``n`` (the TensorFlow
            ``ExponentialMovingAverage`` ramp), so early averages are not dominated by the
            random initialisation.
        every_n_steps: update once at least this many optimizer steps have passed since the last
            update.
        swap_in_eval: load the averaged weights into the module for validation, test and
            predict, and swap the live weights back afterwards.
    """

    def __init__(
        self,
        decay: float = 0.999,
        *,
        module_attr: str | None = "student",
        warmup: bool = True,
        every_n_steps: int = 1,
        swap_in_eval: bool = True,
    ) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.decay = _check_decay(decay)
        self.module_attr = module_attr
        self.warmup = warmup
        self.every_n_steps = every_n_steps
        self.swap_in_eval = swap_in_eval
        self.num_updates = 0
        self._last_step = 0
        self._module: nn.Module | None = None
        self._shadow: dict[str, Tensor] | None = None
        self._pending: dict[str, Tensor] | None = None
        self._live: dict[str, Tensor] | None = None  # live weights while evaluating

    @property
    def state_key(self) -> str:
        """Checkpoint key; distinct per averaged attribute so several EMAs can coexist."""
        return self._generate_state_key(module_attr=self.module_attr)

    # -- the average --------------------------------------------------------------------------

    def current_decay(self) -> float:
        """The decay the next update uses (with the warm-up ramp if enabled)."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    def _tracked(self, pl_module: L.LightningModule) -> nn.Module:
        module: Any = pl_module
        for part in (self.module_attr or "").split("."):
            if part:
                if not hasattr(module, part):
                    raise AttributeError(
                        f"EMA(module_attr={self.module_attr!r}): {type(module).__name__} has no "
                        f"attribute {part!r}; set module_attr to the submodule to average "
                        "(or None for the whole LightningModule)"
                    )
                module = getattr(module, part)
        if not isinstance(module, nn.Module):
            raise TypeError(f"EMA(module_attr={self.module_attr!r}) is a {type(module).__name__}")
        return module

    def _ensure(self, pl_module: L.LightningModule) -> nn.Module:
        """Create the average on first use, apply restored state, follow the module's device."""
        module = self._module = self._tracked(pl_module)
        if self._shadow is None:
            self._shadow = {name: _shadow_copy(t) for name, t, _ in _tensors(module)}
        if self._pending is not None:
            self._load_shadow(self._pending)
            self._pending = None
        for name, t, _ in _tensors(module):
            if self._shadow[name].device != t.device:
                self._shadow[name] = self._shadow[name].to(t.device)
        return module

    def _load_shadow(self, state: dict[str, Tensor]) -> None:
        assert self._shadow is not None
        if state.keys() != self._shadow.keys():
            diff = sorted(state.keys() ^ self._shadow.keys())
            raise KeyError(
                f"EMA state does not match the module {self.module_attr!r}: differs in {diff[:5]}"
            )
        for name, value in state.items():
            self._shadow[name].copy_(value)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """One EMA step towards ``module``'s current weights (called by the trainer hooks)."""
        assert self._shadow is not None, "call _ensure() before update()"
        decay = self.current_decay()
        for name, t, averaged in _tensors(module):
            shadow = self._shadow[name]
            if averaged and shadow.is_floating_point():
                shadow.lerp_(t.detach().to(shadow.dtype), 1.0 - decay)
            else:
                shadow.copy_(t)
        self.num_updates += 1

    @property
    def averaged_parameters(self) -> dict[str, Tensor]:
        """The averaged parameters and copied buffers by name (detached copies)."""
        if self._shadow is None:
            return {} if self._pending is None else dict(self._pending)
        return {name: t.clone() for name, t in self._shadow.items()}

    def apply_to(self, module: nn.Module) -> None:
        """Copy the averaged weights into ``module`` (same structure as the averaged one)."""
        avg = self.averaged_parameters
        with torch.no_grad():
            for name, t, _ in _tensors(module):
                if name not in avg:
                    raise KeyError(f"{name!r} is not in the EMA state of {self.module_attr!r}")
                t.copy_(avg[name])

    @property
    def ema_module(self) -> nn.Module:
        """A frozen copy (eval mode) of the averaged module; a fresh copy on each access."""
        if self._module is None:
            raise RuntimeError("the EMA has not seen its module yet; fit (or restore) first")
        memo: dict[int, Any] = {}
        trainer = getattr(self._module, "_trainer", None)
        if trainer is not None:
            memo[id(trainer)] = None  # never deep-copy the Trainer along with a LightningModule
        copy_ = copy.deepcopy(self._module, memo)
        self.apply_to(copy_)
        copy_.requires_grad_(False)
        return copy_.eval()

    # -- swapping for evaluation --------------------------------------------------------------

    def _swap_in(self, pl_module: L.LightningModule) -> None:
        """Back up the live weights and load the average (the average itself stays intact)."""
        if self.swap_in_eval and self._live is None:
            module = self._ensure(pl_module)
            assert self._shadow is not None
            with torch.no_grad():
                self._live = {name: t.detach().clone() for name, t, _ in _tensors(module)}
                for name, t, _ in _tensors(module):
                    t.copy_(self._shadow[name])

    def _swap_out(self) -> None:
        """Put the live weights back."""
        if self._live is not None:
            assert self._module is not None
            with torch.no_grad():
                for name, t, _ in _tensors(self._module):
                    t.copy_(self._live[name])
            self._live = None

    # -- Lightning hooks ----------------------------------------------------------------------

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Create the average from the initial weights (or the restored state)."""
        self._ensure(pl_module)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Update the average if an optimizer step happened since the last update."""
        step = trainer.global_step
        if step < self._last_step + self.every_n_steps:
            return  # no optimizer step since the last update (accumulation) or not yet due
        self._last_step = step
        self.update(self._ensure(pl_module))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Swap the averaged weights in for validation."""
        self._swap_in(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Swap the live weights back after validation."""
        self._swap_out()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Swap the averaged weights in for test."""
        self._swap_in(pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Swap the live weights back after test."""
        self._swap_out()

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Swap the averaged weights in for predict."""
        self._swap_in(pl_module)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Swap the live weights back after predict."""
        self._swap_out()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Never leave the averaged weights in the module after a crash."""
        self._swap_out()

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """A checkpoint written during evaluation stores the live weights, not the average."""
        if self._live is None:
            return
        prefix = f"{self.module_attr}." if self.module_attr else ""
        weights = checkpoint.get("state_dict", {})
        for name, value in self._live.items():
            if prefix + name in weights:
                weights[prefix + name] = value.clone()

    # -- checkpoint state ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Decay, update count, last step and the averaged tensors."""
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "last_step": self._last_step,
            "averaged": self.averaged_parameters,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the average; applied now, or when the module is first seen."""
        self.num_updates = int(state_dict["num_updates"])
        self._last_step = int(state_dict["last_step"])
        averaged = dict(state_dict["averaged"])
        if self._shadow is None:
            self._pending = averaged
        else:
            self._load_shadow(averaged)

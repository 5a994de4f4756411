"""Frozen modules (teachers, perceptual nets) stay out of a method's checkpoints.

A method holds its frozen teacher as a submodule, so Lightning would save its weights in every
checkpoint. They come from the teacher's own source, so :func:`drop_frozen` removes them on save
and :func:`restore_frozen` puts the live module's weights back on load, which lets strict loading
of a teacher-less checkpoint succeed.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["FrozenCheckpoint", "drop_frozen", "restore_frozen"]


def drop_frozen(checkpoint: dict[str, Any], *names: str) -> None:
    """Remove every ``state_dict`` entry under the submodules ``names`` (e.g. ``"teacher"``)."""
    state = checkpoint["state_dict"]
    prefixes = tuple(f"{name}." for name in names)
    for key in [k for k in state if k.startswith(prefixes)]:
        del state[key]


def restore_frozen(checkpoint: dict[str, Any], **modules: nn.Module | None) -> None:
    """Put each live module's weights back under its name; ``None`` modules are skipped."""
    state = checkpoint["state_dict"]
    for name, module in modules.items():
        if module is not None:
            state.update({f"{name}.{k}": v for k, v in module.state_dict().items()})


class FrozenCheckpoint:
    """Lightning checkpoint hooks that leave the frozen submodules ``frozen_modules`` out.

    Mix in before ``L.LightningModule`` and name the attributes (``None`` ones are skipped);
    a method that saves more state overrides the hooks and calls ``super()`` first.
    """

    frozen_modules: tuple[str, ...] = ("teacher",)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop the frozen modules' weights: they are reloaded from their own sources."""
        drop_frozen(checkpoint, *self.frozen_modules)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put the live frozen modules' weights back, so strict loading of such a file works."""
        restore_frozen(checkpoint, **{name: getattr(self, name) for name in self.frozen_modules})

"""``OnestepCLI``: LightningCLI with the defaults every onestep package shares."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.cli import LightningCLI

__all__ = ["OnestepCLI"]


class OnestepCLI(LightningCLI):
    """LightningCLI with onestep's defaults.

    * any ``LightningModule`` / ``LightningDataModule`` subclass may be named by ``class_path``;
    * the saved ``config.yaml`` may be overwritten (re-running into the same folder works);
    * ``seed_everything`` defaults to 0, so runs are reproducible unless asked otherwise;
    * optimizers come from the module's own ``configure_optimizers`` (methods with alternating
      updates need several), not from the CLI.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("parser_kwargs", {"description": "onestep training (LightningCLI)"})
        super().__init__(*args, **kwargs)

"""Offline RL data: transitions, Minari / D4RL files, normalisation, the Lightning data module.

``OfflineDataModule`` is imported on first use, so collection and evaluation code that only needs
the arrays and files does not pay for importing Lightning.
"""

from typing import TYPE_CHECKING, Any

from onestep.rl.data.checks import action_bounds, check_dataset_matches_env, to_unit_actions
from onestep.rl.data.d4rl import load_d4rl, save_d4rl
from onestep.rl.data.dataset import OfflineDataset
from onestep.rl.data.loading import load_dataset
from onestep.rl.data.minari import load_minari, save_minari
from onestep.rl.data.normalization import (
    REWARD_METHODS,
    normalize_rewards,
    observation_stats,
    reward_transform,
)
from onestep.rl.data.toy import toy_dataset

if TYPE_CHECKING:
    from onestep.rl.data.datamodule import OfflineDataModule

__all__ = [
    "REWARD_METHODS",
    "OfflineDataModule",
    "OfflineDataset",
    "action_bounds",
    "check_dataset_matches_env",
    "load_d4rl",
    "load_dataset",
    "load_minari",
    "normalize_rewards",
    "observation_stats",
    "reward_transform",
    "save_d4rl",
    "save_minari",
    "to_unit_actions",
    "toy_dataset",
]


def __getattr__(name: str) -> Any:
    if name == "OfflineDataModule":
        from onestep.rl.data.datamodule import OfflineDataModule

        return OfflineDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

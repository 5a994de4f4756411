"""A user cache of small trained networks (teacher, classifier), keyed by config and code.

Folder: ``$ONESTEP_CACHE``, else ``$XDG_CACHE_HOME/onestep``, else ``~/.cache/onestep``. A file's
name holds a hash of its config, of the library version and of the source files that define and
train the network, so a code change never loads stale weights. Files are written atomically; an
unreadable one is reported with a warning and retrained, never a crash.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from onestep.core import __version__

__all__ = ["cache_dir", "cache_path", "load_or_train"]


def cache_dir() -> Path:
    """The onestep user cache folder (not created here)."""
    if os.environ.get("ONESTEP_CACHE"):
        return Path(os.environ["ONESTEP_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "onestep"
    return Path.home() / ".cache" / "onestep"


def cache_path(name: str, config: Mapping, sources: Sequence[Path]) -> Path:
    """``<cache>/demo/<name>-<hash>.safetensors`` for this config, version and code."""
    digest = hashlib.sha256()
    digest.update(json.dumps(dict(config), sort_keys=True).encode())
    digest.update(__version__.encode())
    for src in sources:
        digest.update(Path(src).read_bytes())
    return cache_dir() / "demo" / f"{name}-{digest.hexdigest()[:16]}.safetensors"


def _try_load(net: nn.Module, path: Path) -> bool:
    """Load ``path`` into ``net``; False (with a warning) if it is missing a key or unreadable."""
    try:
        net.load_state_dict(load_file(str(path)))
    except Exception as err:  # a corrupt file can fail in safetensors, torch or json
        warnings.warn(
            f"cached weights {path} are unreadable ({type(err).__name__}: {err}); retraining",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


def load_or_train(
    name: str,
    config: Mapping,
    sources: Sequence[Path],
    net: nn.Module,
    train: Callable[[nn.Module], None],
    *,
    retrain: bool = False,
    log: Callable[[str], None] = print,
) -> bool:
    """Fill ``net`` from the cache, or train it in place with ``train(net)`` and cache it.

    Args:
        name: file-name prefix (``"teacher"``, ``"classifier"``).
        config: JSON-serialisable settings that determine the weights (seed included).
        sources: source files whose contents are part of the key.
        net: the freshly built network; its weights are replaced.
        train: trains ``net`` in place.
        retrain: ignore an existing cache file (and overwrite it).
        log: where the one-line status goes.

    Returns:
        True if the weights came from the cache.
    """
    path = cache_path(name, config, sources)
    if path.exists() and not retrain and _try_load(net, path):
        log(f"loaded cached {name} from {path}")
        return True
    train(net)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(tmp), metadata={"config": json.dumps(dict(config), sort_keys=True)})
    os.replace(tmp, path)
    log(f"trained {name}; cached at {path}")
    return False

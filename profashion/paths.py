"""The project's two roots, resolved in one place: the cache and the checkpoints.

- :func:`cache_root`: ``$PROFASHION_CACHE``, else ``$XDG_CACHE_HOME/profashion``, else ``~/.cache/profashion``.
  The app's gallery, indexes and projections, the trainer's frozen-trunk features and the converted pretrained
  weights all live under it, so one variable moves them together.
- :func:`checkpoints_root`: ``$PROFASHION_CHECKPOINTS``, else the caller's default (``checkpoints/`` in the
  working folder when none is given; the app passes the repository's).

Both read the environment at each call (a test or a benchmark may set it after import).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE = "PROFASHION_CACHE"
ENV_CHECKPOINTS = "PROFASHION_CHECKPOINTS"
ENV_XDG_CACHE = "XDG_CACHE_HOME"


def user_cache_home() -> Path:
    """The user's cache folder: ``$XDG_CACHE_HOME``, else ``~/.cache``."""
    return Path(os.environ.get(ENV_XDG_CACHE) or Path.home() / ".cache")


def cache_root() -> Path:
    """``$PROFASHION_CACHE``, else ``profashion`` in :func:`user_cache_home`."""
    return Path(os.environ.get(ENV_CACHE) or user_cache_home() / "profashion")


def checkpoints_root(default: str | os.PathLike | None = None) -> Path:
    """``$PROFASHION_CHECKPOINTS``, else ``default`` (``checkpoints`` in the working folder when None)."""
    return Path(os.environ.get(ENV_CHECKPOINTS) or (default if default is not None else "checkpoints"))

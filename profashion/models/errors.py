"""The models' one error: :class:`ModelError` (a module of its own, so that the backbones and the pretrained
weights can raise it without importing the model contract in :mod:`profashion.models.base`)."""

from __future__ import annotations


class ModelError(ValueError):
    """An unknown model, preset or a checkpoint that cannot be loaded; the message says what to do."""

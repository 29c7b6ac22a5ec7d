"""Models: one file per method; importing this package imports every module in it, which registers each method
(see base.register), so adding a method is adding its file."""

import importlib
import pkgutil

from profashion.models.base import (  # noqa: F401
    ModelConfig,
    ModelError,
    RetrievalModel,
    available_models,
    build_model,
    display_name,
    load_model,
    method_about,
    register,
    save_checkpoint,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
del _module

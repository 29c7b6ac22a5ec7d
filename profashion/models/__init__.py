"""Models: one file per method; importing this package registers them all (see base.register)."""

# Each method module registers itself on import. Keep this list in sync with the files.
from profashion.models import asen, cca, csn, profashion, tf_baselines, triplet  # noqa: E402,F401,I001
from profashion.models.base import (  # noqa: F401
    ModelConfig,
    ModelError,
    RetrievalModel,
    available_models,
    build_model,
    load_model,
    register,
    save_checkpoint,
)

"""ProFashion Explorer: attribute-specific fashion retrieval, made visible.

Public API::

    import profashion
    model = profashion.build_model("asen", preset="demo", num_values=[6, 9, 8])
    model = profashion.load_model("checkpoints/asen")
    ds = profashion.load_dataset("data/synth")
    profashion.build_index("checkpoints/asen", "data/synth", "indexes/asen")
    engine = profashion.RetrievalEngine(); engine.add("asen", "indexes/asen")
    engine.search_all("query.jpg", "sleeve_length", k=5)
"""

from profashion.data.images import ImageError, Preprocess, load_image
from profashion.data.splits import AttributeSchema, DatasetError, SplitDataset, load_dataset
from profashion.models.base import (
    ModelError,
    RetrievalModel,
    available_models,
    build_model,
    load_model,
    save_checkpoint,
)
from profashion.retrieval import GalleryIndex, GalleryIndexError, QueryError, RetrievalEngine, build_index

__version__ = "0.1.0"

__all__ = [
    "AttributeSchema",
    "DatasetError",
    "GalleryIndex",
    "GalleryIndexError",
    "ImageError",
    "ModelError",
    "Preprocess",
    "QueryError",
    "RetrievalEngine",
    "RetrievalModel",
    "SplitDataset",
    "available_models",
    "build_index",
    "build_model",
    "load_dataset",
    "load_image",
    "load_model",
    "save_checkpoint",
]

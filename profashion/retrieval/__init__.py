"""Retrieval engine: gallery indexes (faiss), search, 2-D projections and disentanglement measures."""

from profashion.retrieval.index import GalleryIndex, GalleryIndexError, build_index  # noqa: F401
from profashion.retrieval.search import Hit, QueryError, RetrievalEngine, SearchResult  # noqa: F401

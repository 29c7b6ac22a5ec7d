"""The explorer's services: what the app (and the CLI) know of galleries, models, jobs, links and exports, with
no Gradio.

- :class:`Galleries` holds every embedded gallery (a :class:`Catalog`: the gallery's images and labels, its
  models, their indexes, explanations, projections and numbers), the one object the UI stands on: embed once,
  ask many times;
- :class:`JobManager` runs fine-tuning jobs in processes of their own, each owned by the browser that launched it;
- :func:`read_link` and :func:`link_query` read and write a case's share link; :class:`UploadStore` keeps the
  uploads a link names;
- :func:`export_case` writes a case as one PNG and one JSON;
- :mod:`profashion.explorer.public` is what a visitor may see of the server: files mirrored by content, texts
  with no server path.

``profashion.ui`` builds the Gradio page over these; ``profashion.cli`` uses them too (``profashion export``).
"""

from profashion.explorer.catalog import Catalog, Example, GallerySpec, ModelEntry
from profashion.explorer.export import case_record, export_case
from profashion.explorer.galleries import Galleries, GalleryDef, SkippedGallery, default_galleries
from profashion.explorer.jobs import JobError, JobManager, training_enabled
from profashion.explorer.share import LinkState, UploadStore, link_query, read_link

__all__ = [
    "Catalog",
    "Example",
    "Galleries",
    "GalleryDef",
    "GallerySpec",
    "JobError",
    "JobManager",
    "LinkState",
    "ModelEntry",
    "SkippedGallery",
    "UploadStore",
    "case_record",
    "default_galleries",
    "export_case",
    "link_query",
    "read_link",
    "training_enabled",
]

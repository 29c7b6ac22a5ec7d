"""Pictures of models at work (pure functions, no Gradio): heatmap overlays, superpixel boundaries,
transport plans, ground-truth outlines, hit/miss thumbnails and per-model strips of every map; and the typed
:class:`Explanation` every model's ``explain`` returns.

Only :mod:`~profashion.explain.explanation` is imported with the package (the models import it); the drawing
modules (matplotlib, scikit-image) load when one of their names is first used.
"""

from profashion.explain.explanation import KINDS, Explanation, Map  # noqa: F401

_LAZY = {name: "profashion.explain.render" for name in (
    "explain_panels", "heatmap_overlay", "hit_thumbnail", "mask_outline", "matrix_image",
    "segmentation_overlay", "strip")}
_LAZY.update({"scatter_svg": "profashion.explain.scatter", "value_colours": "profashion.explain.scatter"})


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

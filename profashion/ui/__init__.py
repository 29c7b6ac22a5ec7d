"""The Gradio app (the only package that imports gradio): ``build_demo(catalog)`` and ``launch_kwargs``.

The catalog (``profashion.ui.catalog``, no gradio) is importable alone; the Blocks load gradio lazily.
"""

from profashion.ui.catalog import Catalog, GallerySpec  # noqa: F401


def build_demo(catalog, jobs=None):
    from profashion.ui.demo import build_demo as _build

    return _build(catalog, jobs)


def launch_kwargs(catalog) -> dict:
    from profashion.ui.demo import launch_kwargs as _kwargs

    return _kwargs(catalog)

"""The Gradio app (the only package that imports gradio): ``build_demo(galleries)`` and ``launch_kwargs``.

It builds and wires the page over the explorer's services (:mod:`profashion.explorer`: galleries, catalog, jobs,
links, exports, no gradio); the Blocks load gradio lazily.
"""


def build_demo(catalog, jobs=None):
    from profashion.ui.demo import build_demo as _build

    return _build(catalog, jobs)


def launch_kwargs(catalog) -> dict:
    from profashion.ui.demo import launch_kwargs as _kwargs

    return _kwargs(catalog)

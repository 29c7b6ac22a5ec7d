"""Pictures of models at work (pure functions, no Gradio): heatmap overlays, superpixel boundaries,
transport plans, ground-truth outlines, hit/miss thumbnails and per-model strips of every map."""

from profashion.explain.render import (  # noqa: F401
    Panel,
    classify_maps,
    explain_panels,
    heatmap_overlay,
    hit_thumbnail,
    mask_outline,
    matrix_image,
    segmentation_overlay,
    strip,
)
from profashion.explain.scatter import scatter_svg, value_colours  # noqa: F401

"""ProFashion's Patch -> Superpixel building block: density superpixels and their quality metrics.

``density_superpixels(image, n_segments)`` -> (H, W) int32 labels (see :mod:`.density`);
``boundary_recall`` / ``undersegmentation_error`` / ``achievable_segmentation_accuracy`` score any
superpixel map against a ground-truth segmentation (see :mod:`.metrics`).
"""

from profashion.superpixels.density import (
    SuperpixelError,
    density_map,
    density_superpixels,
    density_superpixels_batch,
)
from profashion.superpixels.metrics import (
    achievable_segmentation_accuracy,
    boundary_recall,
    labels_from_attribute_masks,
    undersegmentation_error,
)

__all__ = [
    "SuperpixelError",
    "achievable_segmentation_accuracy",
    "boundary_recall",
    "density_map",
    "density_superpixels",
    "density_superpixels_batch",
    "labels_from_attribute_masks",
    "undersegmentation_error",
]

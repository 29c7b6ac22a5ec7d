"""Pure picture functions for a model's ``explain`` maps; numpy/PIL in, uint8 RGB arrays out.

``model.explain(x, a)`` returns an :class:`~profashion.explain.explanation.Explanation`: maps, each with its
kind. :func:`explain_panels` draws each map by its kind, never by its name:

- ``heatmap``: a colour overlay (nearest-neighbour when coarser than the image), scored for localisation
  when a ground-truth mask is given;
- ``heatmaps``: a montage of overlays (at most 16);
- ``labels``: region boundaries; with a ``selection``, a second panel darkens the regions not picked;
- ``matrix``: ``imshow`` with a colour bar, its rows / columns named (attribute rows by the dataset's
  attribute names) and the queried attribute's row marked;
- ``box``: the box drawn on the image.

The Explore tab draws no picture of a whole panel: it sends layers the browser stacks (:func:`colour_layer`, a map's
colours at its own resolution; :func:`outline_layer`, the ground-truth outline; :func:`data_uri`), with
:func:`gradient_css` as the colour bar and :func:`top_columns` cutting a plan to its heaviest columns.

Numbers are returned as they are. A heatmap's localisation score and pointing-game hit come from
:mod:`profashion.explain.scores`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from profashion.explain.explanation import Explanation, Map
from profashion.explain.scores import localisation_score, pointing_hit

DISPLAY = 192  # pixels of one panel's image side in a strip
TITLE_H = 22


# --------------------------------------------------------------------------------------------------
# Conversions


def to_numpy(value) -> np.ndarray | None:
    """A torch tensor or array-like as a numpy array (None for what is not numeric)."""
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy() if value.dtype.is_floating_point else value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        return None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        return None
    return arr


def as_rgb(image) -> np.ndarray:
    """(H, W, 3) uint8 from a PIL image or an array (gray, RGB, RGBA; float in [0, 1] or 0-255)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"an image must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    arr = arr[..., :3]
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255)
    return np.ascontiguousarray(arr.astype(np.uint8))


def resize_map(m: np.ndarray, shape: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """A 2-D map resized to ``shape`` (bilinear, or nearest to keep a coarse grid visible)."""
    m = np.asarray(m, dtype=np.float32)
    if m.shape == tuple(shape):
        return m
    img = Image.fromarray(m, "F").resize((shape[1], shape[0]), Image.NEAREST if nearest else Image.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def normalise01(m: np.ndarray) -> np.ndarray:
    m = np.nan_to_num(np.asarray(m, dtype=np.float32))
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi - lo > 1e-12 else np.zeros_like(m)


def _upscale(rgb: np.ndarray, side: int = DISPLAY) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = side / max(h, w)
    if abs(s - 1.0) < 1e-6:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((max(1, round(w * s)), max(1, round(h * s))), Image.NEAREST))


# --------------------------------------------------------------------------------------------------
# Single pictures


def heatmap_overlay(image, heatmap, alpha: float = 0.5, cmap: str = "jet", nearest: bool = False) -> np.ndarray:
    """The image with a (min-max normalised) map blended on top through a matplotlib colormap."""
    import matplotlib

    rgb = as_rgb(image)
    m = normalise01(resize_map(to_numpy(heatmap), rgb.shape[:2], nearest=nearest))
    colour = matplotlib.colormaps[cmap](m)[..., :3] * 255.0
    out = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colour
    return np.clip(out, 0, 255).astype(np.uint8)


def _labels_at(labels, shape: tuple[int, int]) -> np.ndarray:
    lab = np.asarray(to_numpy(labels)).astype(np.int32)
    if lab.shape != tuple(shape):
        lab = np.asarray(Image.fromarray(lab, "I").resize((shape[1], shape[0]), Image.NEAREST)).astype(np.int32)
    return lab


def inner_boundaries(labels: np.ndarray, background: int = 0) -> np.ndarray:
    """The pixels of a 2-D label image that touch (4-connected) a pixel of another label, background excluded: what
    ``skimage.segmentation.find_boundaries(labels, mode="inner")`` gives, by four array comparisons instead of a
    grey dilation and erosion (a tenth of the time on a 160 px image, which Explore draws twice per query)."""
    lab = np.asarray(labels)
    edges = np.zeros(lab.shape, dtype=bool)
    down = lab[1:, :] != lab[:-1, :]
    right = lab[:, 1:] != lab[:, :-1]
    edges[1:, :] |= down
    edges[:-1, :] |= down
    edges[:, 1:] |= right
    edges[:, :-1] |= right
    return edges & (lab != background)


def segmentation_overlay(image, labels, selected: Sequence[int] | None = None,
                         colour=(255, 235, 0), dim: float = 0.3) -> np.ndarray:
    """Segment boundaries drawn on the image; with ``selected``, the other segments are darkened."""
    rgb = as_rgb(image)
    lab = _labels_at(labels, rgb.shape[:2])
    if selected is not None:
        chosen = np.asarray([int(v) for v in selected if 0 <= int(v) <= lab.max()], dtype=np.int64)
        lut = np.zeros(int(max(lab.max(), 0)) + 1, dtype=bool)  # a look-up by label: np.isin sorts every pixel
        lut[chosen] = True
        keep = lut[np.clip(lab, 0, None)] & (lab >= 0)
        rgb = np.where(keep[..., None], rgb, (rgb.astype(np.float32) * dim).astype(np.uint8))
    else:
        rgb = rgb.copy()
    rgb[inner_boundaries(lab)] = colour
    return rgb


def mask_outline(image, mask, colour=(0, 255, 0), width: int = 1) -> np.ndarray:
    """The outline of a boolean mask (the ground-truth attribute region) drawn on the image."""
    from scipy.ndimage import binary_dilation

    rgb = as_rgb(image).copy()
    m = np.asarray(mask, dtype=bool)
    if m.shape != rgb.shape[:2]:
        m = resize_map(m.astype(np.float32), rgb.shape[:2], nearest=True) > 0.5
    edges = inner_boundaries(m.astype(np.uint8))
    if width > 1:
        edges = binary_dilation(edges, iterations=width - 1)
    rgb[edges] = colour
    return rgb


def box_overlay(image, box: Sequence[float], colour=(255, 0, 255)) -> np.ndarray:
    """A (y0, x0, y1, x1) box, in the image's pixels, drawn on it."""
    img = Image.fromarray(as_rgb(image))
    y0, x0, y1, x1 = (float(v) for v in box)
    ImageDraw.Draw(img).rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=2)
    return np.asarray(img)


MAX_TICKS = 16  # column tick labels are drawn up to this many columns (else the axis is named)


def matrix_image(matrix, title: str = "", row_labels: Sequence[str] | None = None,
                 highlight_row: int | None = None, xlabel: str = "column", ylabel: str = "row",
                 size: tuple[float, float] = (4.0, 3.0), col_labels: Sequence[str] | None = None) -> np.ndarray:
    """A matrix (e.g. a transport plan) drawn with imshow and a colour bar, as an RGB array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = np.atleast_2d(np.asarray(to_numpy(matrix), dtype=np.float32))
    fig = Figure(figsize=size, dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    im = ax.imshow(m, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.03)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    if col_labels is not None and len(col_labels) == m.shape[1] and m.shape[1] <= MAX_TICKS:
        ax.set_xticks(range(m.shape[1]))
        ax.set_xticklabels(list(col_labels), fontsize=6, rotation=90)
    if row_labels is not None and len(row_labels) == m.shape[0]:
        ax.set_yticks(range(m.shape[0]))
        ax.set_yticklabels(list(row_labels), fontsize=6)
    else:
        ax.set_ylabel(ylabel, fontsize=8)
    if highlight_row is not None and 0 <= highlight_row < m.shape[0] and m.shape[0] > 1:
        ax.axhline(highlight_row - 0.5, color="red", lw=2)
        ax.axhline(highlight_row + 0.5, color="red", lw=2)
    ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def hit_thumbnail(image, match: bool | None, side: int = 128, border: int = 6) -> np.ndarray:
    """A retrieved image with a green (hit), red (miss) or grey (unknown) frame."""
    colour = {True: (22, 163, 74), False: (220, 38, 38), None: (148, 163, 184)}[match]
    img = Image.fromarray(as_rgb(image))
    img.thumbnail((side - 2 * border, side - 2 * border), Image.BILINEAR)
    frame = Image.new("RGB", (img.width + 2 * border, img.height + 2 * border), colour)
    frame.paste(img, (border, border))
    return np.asarray(frame)


# --------------------------------------------------------------------------------------------------
# Layers the browser blends (the Explore tab): the image, a map's colours, the ground-truth outline, each
# sent once and stacked in the page, so that the overlay's opacity changes without drawing anything again

CMAP = "jet"  # the overlays' colormap (grad-cam's convention): blue = a map's lowest value, red = its highest


@functools.lru_cache(maxsize=8)
def colour_table(cmap: str = CMAP) -> np.ndarray:
    """(256, 3) uint8: ``cmap`` sampled once (a matplotlib colormap builds its table again on every copy)."""
    import matplotlib

    return (matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)


def colour_layer(heatmap, cmap: str = CMAP) -> np.ndarray:
    """A map (min-max normalised) through ``cmap``: (h, w, 3) uint8 at the map's own resolution."""
    m = normalise01(np.asarray(to_numpy(heatmap), dtype=np.float32))
    return colour_table(cmap)[np.rint(m * 255).astype(np.int32)]


def outline_layer(mask, shape: tuple[int, int], width: int = 3) -> np.ndarray:
    """(H, W, 4) uint8, transparent but for the outline of the boolean ``mask`` (resized to ``shape``, nearest):
    a white line of ``width`` pixels on a black edge, visible on every colour of the overlay."""
    from scipy.ndimage import binary_dilation

    m = np.asarray(mask, dtype=bool)
    if m.shape != tuple(shape):
        m = resize_map(m.astype(np.float32), shape, nearest=True) > 0.5
    core = inner_boundaries(m.astype(np.uint8))
    if width > 1:
        core = binary_dilation(core, iterations=width - 1)
    edge = binary_dilation(core, iterations=1) & ~core
    out = np.zeros((*shape, 4), np.uint8)
    out[edge] = (0, 0, 0, 200)
    out[core] = (255, 255, 255, 255)
    return out


def data_uri(image: np.ndarray, fmt: str = "png", quality: int = 88) -> str:
    """An (H, W, 3|4) uint8 array as a ``data:`` URI (PNG, or JPEG for smooth pictures: a fifth of the bytes)."""
    import base64
    import io

    buf = io.BytesIO()
    im = Image.fromarray(np.ascontiguousarray(image))
    if fmt == "jpeg":
        im.convert("RGB").save(buf, "JPEG", quality=quality)
    else:
        im.save(buf, "PNG", optimize=False, compress_level=1)  # 2x faster than 6 for ~15% more bytes (Explore: 35 a query)
    return f"data:image/{fmt};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def colour_hex(value: float, cmap: str = CMAP) -> str:
    """The ``#rrggbb`` colour of ``value`` in [0, 1] through ``cmap``."""
    v = float(value)
    v = 0.0 if v != v else min(max(v, 0.0), 1.0)  # NaN as 0, infinities clipped (np.nan_to_num's reading, 10x faster)
    r, g, b = colour_table(cmap)[int(round(255 * v))]
    return f"#{r:02x}{g:02x}{b:02x}"


def gradient_css(cmap: str = CMAP, stops: int = 11) -> str:
    """A CSS ``linear-gradient`` left (0) to right (1) through ``cmap``: a colour bar."""
    parts = [f"{colour_hex(i / (stops - 1), cmap)} {100 * i / (stops - 1):.0f}%" for i in range(stops)]
    return "linear-gradient(to right, " + ", ".join(parts) + ")"


def top_columns(matrix, row: int | None = None, k: int = 8) -> list[int]:
    """The ``k`` columns of a matrix with the most weight in ``row`` (None: summed over the rows), heaviest
    first; every column, in order, when there are at most ``k``."""
    m = np.atleast_2d(np.asarray(to_numpy(matrix), dtype=np.float64))
    if m.shape[1] <= k:
        return list(range(m.shape[1]))
    w = m[row] if row is not None and 0 <= row < m.shape[0] else m.sum(0)
    return [int(i) for i in np.argsort(-np.nan_to_num(w, nan=-np.inf), kind="stable")[:k]]


@dataclasses.dataclass
class RenderedPanel:
    title: str
    image: np.ndarray  # uint8 RGB
    key: str  # the map's name (or "input" / "ground_truth")
    kind: str  # the picture: image | mask | map | maps | segments | selection | matrix | box
    localisation: float | None = None  # percent of the map's mass in the ground-truth mask
    pointing: bool | None = None
    about: str = ""  # what the map means, in a sentence (the model's)


def _montage(tiles: list[np.ndarray], cols: int) -> np.ndarray:
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + cols - 1) // cols
    out = np.full((rows * h + (rows - 1) * 2, cols * w + (cols - 1) * 2, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = t
    return out


def _row_labels(m: Map, attribute_names: Sequence[str] | None) -> list[str] | None:
    """A matrix's row labels: attribute rows by the dataset's names when known, else the model's labels."""
    if m.row_attributes is not None and attribute_names is not None \
            and all(0 <= i < len(attribute_names) for i in m.row_attributes):
        return [str(attribute_names[i]) for i in m.row_attributes]
    return list(m.row_labels) if m.row_labels is not None else None


def explain_panels(image, explanation: Explanation, mask: np.ndarray | None = None,
                   attribute: int | None = None, attribute_names: Sequence[str] | None = None
                   ) -> tuple[list[RenderedPanel], dict[str, float]]:
    """Every map of ``explanation`` drawn by its kind on the (model-input-sized) ``image``; and its numbers.

    With a ground-truth ``mask`` (same size as the image), each heatmap gets its localisation score and
    pointing-game hit, and the first panel is the image with the mask's outline. ``attribute_names`` name the
    rows of matrices whose rows are attributes (the queried one is the map's own ``highlight_row``: ``attribute``
    is accepted for the callers that pass it, and not needed).
    """
    if not isinstance(explanation, Explanation):
        raise TypeError(f"explain_panels draws an Explanation (profashion.explain.explanation), got "
                        f"{type(explanation).__name__}")
    small = as_rgb(image)
    hw = small.shape[:2]
    maps, numbers = list(explanation.maps), dict(explanation.numbers)
    # drawn at display size (boundaries and outlines one display pixel wide); scored at the model's size
    rgb = _upscale(small, max(DISPLAY, max(hw)))
    scale = rgb.shape[0] / hw[0]
    big_mask = None
    scored = mask is not None and np.asarray(mask).any()
    if scored:
        big_mask = resize_map(np.asarray(mask, np.float32), rgb.shape[:2], nearest=True) > 0.5
        share = 100.0 * float(np.asarray(mask, bool).mean())
        out = [RenderedPanel(f"ground truth ({share:.0f}% of image)", mask_outline(rgb, big_mask, width=2),
                             "ground_truth", "mask", about="The attribute's ground-truth region.")]
    else:
        out = [RenderedPanel("input", rgb, "input", "image", about="The model's input image.")]
    for m in maps:
        if m.kind == "box":
            out.append(RenderedPanel(m.title, box_overlay(rgb, [float(v) * scale for v in m.data]), m.name, "box",
                                     about=m.about))
            continue
        data = to_numpy(m.data)
        if data is None or data.size == 0:
            continue
        if m.kind == "heatmap":
            data = data.astype(np.float32)
            coarse = data.shape != hw
            score = hit = None
            title = m.title + (f" ({data.shape[0]}x{data.shape[1]})" if coarse else "")
            if scored and np.isfinite(data).all():
                score = localisation_score(data, mask)
                hit = pointing_hit(data, mask)
                title += f": {score:.0f}% in mask"
            drawn = heatmap_overlay(rgb, data, nearest=coarse)
            if scored:  # the region's outline on every map (white, as on the page), not only on the first panel
                drawn = mask_outline(drawn, big_mask, colour=(255, 255, 255), width=2)
            out.append(RenderedPanel(title, drawn, m.name, "map", score, hit, m.about))
        elif m.kind == "heatmaps":
            data = data.astype(np.float32)
            tiles = [heatmap_overlay(rgb, t, nearest=t.shape != hw) for t in data[:16]]
            cols = int(np.ceil(np.sqrt(len(tiles))))
            out.append(RenderedPanel(f"{m.title} ({len(data)})", _montage(tiles, cols), m.name, "maps",
                                     about=m.about))
        elif m.kind == "labels":
            n = len(np.unique(data))
            out.append(RenderedPanel(f"{m.title} ({n})", segmentation_overlay(rgb, data), m.name, "segments",
                                     about=m.about))
            if m.selection:
                ids = [i for i, _ in m.selection]
                out.append(RenderedPanel(f"selected {m.title} ({len(ids)})",
                                         segmentation_overlay(rgb, data, selected=ids), m.name, "selection",
                                         about=f"The {len(ids)} region(s) the method picked, the rest darkened."))
        elif m.kind == "matrix":
            data = np.atleast_2d(data.astype(np.float32))
            img = matrix_image(data, f"{m.title} {data.shape[0]}x{data.shape[1]}",
                               row_labels=_row_labels(m, attribute_names), highlight_row=m.highlight_row,
                               xlabel=m.columns or "column", ylabel=m.rows or "row",
                               col_labels=m.col_labels)
            out.append(RenderedPanel(m.title, img, m.name, "matrix", about=m.about))
    return out, numbers


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def strip(panels: Sequence[RenderedPanel], title: str = "", per_row: int = 5, side: int = DISPLAY) -> np.ndarray:
    """The panels side by side (wrapped after ``per_row``), each titled, with an optional header line."""
    tiles = []
    font = _font(12)
    for p in panels:
        img = p.image if p.kind in ("matrix", "maps") else _upscale(p.image, side)
        im = Image.fromarray(img)
        if im.height > side or im.width > side * 1.4:
            im.thumbnail((int(side * 1.4) if p.kind == "matrix" else side, side), Image.BILINEAR)
        tile = Image.new("RGB", (max(im.width, side), im.height + TITLE_H), "white")
        tile.paste(im, ((tile.width - im.width) // 2, TITLE_H))
        ImageDraw.Draw(tile).text((4, 4), p.title[:40], fill=(20, 20, 20), font=font)
        tiles.append(tile)
    if not tiles:
        tiles = [Image.new("RGB", (side, side + TITLE_H), "white")]
    rows = [tiles[i:i + per_row] for i in range(0, len(tiles), per_row)]
    gap = 6
    width = max(sum(t.width for t in r) + gap * (len(r) - 1) for r in rows)
    head = 26 if title else 0
    height = head + sum(max(t.height for t in r) for r in rows) + gap * (len(rows) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    if title:
        ImageDraw.Draw(canvas).text((4, 5), title, fill=(0, 0, 0), font=_font(15))
    y = head
    for r in rows:
        x = 0
        for t in r:
            canvas.paste(t, (x, y))
            x += t.width + gap
        y += max(t.height for t in r) + gap
    return np.asarray(canvas)

"""A 2-D projection's colours, and the projection as a self-contained SVG scatter plot (no JavaScript library,
no download).

Each point is a ``<circle>`` carrying ``data-item`` (the gallery item id) and a ``<title>`` (the browser's
hover tooltip), so a page can find which point was clicked by event delegation; a legend maps each value
to its colour. A value named after a colour is drawn in that colour ("red" red, "Navy Blue" navy: CSS
colour names and a few fashion ones); the others take a fixed palette colour by their position in the
attribute's value list. Light colours get a dark outline so that they show on the white background.
:func:`colour_lists` gives both, in value order, for a page that draws the points itself (the Embeddings
tab's explorer).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape

import numpy as np
from matplotlib.colors import CSS4_COLORS, to_rgb

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#ad494a")


# Fashion colour names that are not CSS colour names (the product catalogue's baseColour values).
FASHION_COLOURS = {"mustard": "#e1ad01", "peach": "#ffcba4", "rust": "#b7410e", "burgundy": "#800020",
                   "charcoal": "#36454f", "cream": "#fffdd0", "copper": "#b87333", "bronze": "#cd7f32",
                   "mauve": "#e0b0ff", "nude": "#e3bc9a", "skin": "#f1c27d", "taupe": "#483c32",
                   "steel": "#4682b4", "rose": "#ff007f", "offwhite": "#f8f4e8"}


def named_colour(name: str, whole: bool = False) -> str | None:
    """The colour a value's name denotes ("Navy Blue" -> navy, "red" -> red), or None; ``whole``: only a
    match of the whole name ("Sea Green"), not of one of its words ("Fluorescent Green" -> green)."""
    words = [w for w in re.split(r"[^a-z]+", name.lower()) if w]
    for key in ["".join(words)] if whole else ["".join(words), *words]:  # "seagreen", then "sea", "green"
        hex_ = FASHION_COLOURS.get(key) or CSS4_COLORS.get(key)
        if hex_:
            return hex_.lower()
    return None


def value_colours(value_names: Sequence[str]) -> dict[str, str]:
    """A fixed colour per value: the colour its name denotes when it has one not taken by an earlier value,
    else a palette colour (by its index in the attribute's value list, skipping colours already used)."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for whole in (True, False):  # "Green" gets green before "Fluorescent Green" can take it
        for v in value_names:
            c = None if v in out else named_colour(v, whole)
            # a colour already taken: a lighter or darker shade of it ("Grey Melange" beside "Grey")
            for shade in ([c, _mix(c, "#ffffff"), _mix(c, "#000000")] if c else []):
                if shade not in used:
                    out[v] = shade
                    used.add(shade)
                    break
    free = [c for c in PALETTE if c not in used]
    for i, v in enumerate(value_names):
        if v not in out:
            out[v] = free[i % len(free)] if free else PALETTE[i % len(PALETTE)]
    return out


def _mix(colour: str, other: str, t: float = 0.45) -> str:
    a, b = np.array(to_rgb(colour)), np.array(to_rgb(other))
    return "#" + "".join(f"{round(255 * x):02x}" for x in (1 - t) * a + t * b)


def outline(colour: str) -> str:
    """The outline that keeps a fill visible on white: dark for light colours, white otherwise."""
    r, g, b = to_rgb(colour)
    return "#555" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.8 else "#fff"


def colour_lists(value_names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(fill, outline) of each value, in the order of ``value_names`` (:func:`value_colours`, :func:`outline`)."""
    colours = value_colours(value_names)
    fills = [colours[v] for v in value_names]
    return fills, [outline(c) for c in fills]


def scatter_svg(xy: np.ndarray, values: Sequence[int], value_names: Sequence[str], items: Sequence[int],
                title: str = "", plot_id: str = "a", size: int = 420, radius: float = 3.2) -> str:
    """An SVG scatter of ``xy`` (n, 2) coloured by ``value_names[values[i]]``; points carry their item id."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    values = np.asarray(values, dtype=np.int64)
    colours = value_colours(value_names)
    pad, legend_h, head = 12, 18 * ((len(value_names) + 2) // 3), 22 if title else 0
    w, h = size, size
    if len(xy):
        lo, hi = xy.min(0), xy.max(0)
        span = np.where(hi - lo > 1e-12, hi - lo, 1.0)
        p = (xy - lo) / span
    else:
        p = xy
    px = pad + p[:, 0] * (w - 2 * pad) if len(xy) else []
    py = head + pad + (1.0 - p[:, 1]) * (h - 2 * pad) if len(xy) else []
    total_h = head + h + legend_h
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {total_h}" width="100%" '
           f'style="max-width:{w}px;background:#fff;font-family:sans-serif" data-plot="{escape(plot_id)}" '
           f'role="img" aria-label="{escape(title)}">']
    if title:
        out.append(f'<text x="4" y="15" font-size="13" fill="#111">{escape(title)}</text>')
    out.append(f'<rect x="0.5" y="{head + 0.5}" width="{w - 1}" height="{h - 1}" fill="none" stroke="#ccc"/>')
    for x, y, v, it in zip(px, py, values, items):
        name = value_names[int(v)] if 0 <= int(v) < len(value_names) else "?"
        fill = colours.get(name, "#000")
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="{fill}" '
                   f'fill-opacity="0.85" stroke="{outline(fill)}" stroke-width="0.5" data-item="{int(it)}" '
                   f'data-plot="{escape(plot_id)}" style="cursor:pointer">'
                   f'<title>item {int(it)}: {escape(name)}</title></circle>')
    for i, name in enumerate(value_names):
        lx, ly = 8 + (i % 3) * (w // 3), head + h + 6 + (i // 3) * 18
        out.append(f'<rect x="{lx}" y="{ly}" width="10" height="10" fill="{colours[name]}" '
                   f'stroke="{outline(colours[name])}" stroke-width="0.5"/>'
                   f'<text x="{lx + 14}" y="{ly + 9}" font-size="11" fill="#222">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)

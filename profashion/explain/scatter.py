"""A 2-D projection as a self-contained SVG scatter plot (no JavaScript library, no download).

Each point is a ``<circle>`` carrying ``data-item`` (the gallery item id) and a ``<title>`` (the browser's
hover tooltip), so a page can find which point was clicked by event delegation; a legend maps each value
to its colour, which is fixed by the value's position in the attribute's value list.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#ad494a")


def value_colours(value_names: Sequence[str]) -> dict[str, str]:
    """A fixed colour per value (by its index in the attribute's value list)."""
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(value_names)}


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
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="{colours.get(name, "#000")}" '
                   f'fill-opacity="0.85" stroke="#fff" stroke-width="0.5" data-item="{int(it)}" '
                   f'data-plot="{escape(plot_id)}" style="cursor:pointer">'
                   f'<title>item {int(it)}: {escape(name)}</title></circle>')
    for i, name in enumerate(value_names):
        lx, ly = 8 + (i % 3) * (w // 3), head + h + 6 + (i // 3) * 18
        out.append(f'<rect x="{lx}" y="{ly}" width="10" height="10" fill="{colours[name]}"/>'
                   f'<text x="{lx + 14}" y="{ly + 9}" font-size="11" fill="#222">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)

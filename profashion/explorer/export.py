"""Export the current comparison for slides and papers (no Gradio here): one PNG and one JSON.

:func:`export_case` runs the query through every chosen model (the catalog's cached embeddings: no model runs
again for a query already shown) and writes

- a PNG: one row per model (its name, hit count and what it is), the query, its top-5 (each framed green for a
  hit, red for a miss, with its value and score) and the model's main map (its first heatmap, with the share of
  it inside the ground-truth region when the gallery has one);
- a JSON: the gallery, attribute, query (a gallery item id, or the upload's sha256: never a server path), and per
  model its hits (rank, item, value, score, hit) and its main map's localisation numbers.

Both go to a fresh folder under ``<cache>/exports/`` (the oldest of more than ``MAX_EXPORTS`` are removed).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path

import numpy as np

from profashion.explain.explanation import map_title
from profashion.explain.render import CMAP
from profashion.io import atomic_path, atomic_write_text, sha256_file
from profashion.retrieval.search import QueryError

MAX_EXPORTS = 64
K = 5


def main_panel(panels):
    """A model's main map: its first heatmap, else its first picture that is not the input or the region."""
    maps = [p for p in panels if p.kind in ("map", "maps")]
    rest = [p for p in panels if p.kind not in ("image", "mask")]
    return (maps or rest or [None])[0]


def _trim(root: Path) -> None:
    folders = sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
    for d in folders[:max(0, len(folders) - MAX_EXPORTS)]:
        shutil.rmtree(d, ignore_errors=True)


def case_record(catalog, path, attribute, models) -> tuple[dict, dict]:
    """(the JSON record of the comparison, per model the pictures to draw: query, hits, main map)."""
    from profashion.data.images import ImageError, load_image

    results, item = catalog.search(path, attribute, models, k=K)
    a = catalog.attribute_index(attribute)
    p, img = catalog.decode_query(path)
    qv = catalog.query_value(item, a)
    query = {"item": item, "value": qv} if item is not None else {"upload_sha256": sha256_file(p), "value": None}
    record = {"app": "ProFashion Explorer", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "gallery": catalog.name, "gallery_title": catalog.title, "attribute": attribute, "query": query,
              "models": {}}
    pictures = {"query": np.asarray(img), "rows": {}}
    for name, r in results.items():
        entry = catalog.models[name]
        hits, images = [], []
        for h in r.hits:
            hits.append({"rank": h.rank, "item": int(h.item), "value": h.value, "score": round(float(h.score), 4),
                         "hit": h.match})
            try:
                images.append(load_image(catalog.item_path(h.item)))
            except ImageError:
                images.append(np.zeros((8, 8, 3), np.uint8))
        model = {"label": entry.label, "method": entry.method, "about": entry.about, "hits": hits,
                 "hit_count": sum(1 for h in r.hits if h.match), "error": r.error}
        panel = None
        try:
            ex = catalog.explain(name, str(p), attribute, item, image=img)
            panel = main_panel(ex.panels)
            if panel is not None:
                model["main_map"] = {"title": map_title(panel.key), "key": panel.key, "kind": panel.kind,
                                     "in_region_percent": None if panel.localisation is None
                                     else round(panel.localisation, 2),
                                     "region_percent": None if ex.mask_share is None else round(ex.mask_share, 2)}
        except (ValueError, RuntimeError, QueryError) as exc:
            model["main_map"] = {"error": str(exc)}
        record["models"][name] = model
        pictures["rows"][name] = {"hits": images, "map": None if panel is None else panel.image}
    return record, pictures


def draw_case(record: dict, pictures: dict, out: Path) -> None:
    """The comparison as one PNG (matplotlib, 110 dpi): one row per model, the query first, the main map last (the
    ground-truth outline on it, as on the page, and the maps' colour bar beside the column)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    names = list(record["models"])
    cols = 2 + K
    mapped = any(pictures["rows"][n]["map"] is not None for n in names)  # then a colour bar beside the maps
    fig, axes = plt.subplots(max(1, len(names)), cols, figsize=(1.6 * cols, 1.9 * max(1, len(names))),
                             squeeze=False)
    colours = {True: "#16a34a", False: "#dc2626", None: "#94a3b8"}
    q = record["query"]
    qtext = f"item #{q['item']}" if q.get("item") is not None else "upload"
    for row, name in enumerate(names):
        m, pics = record["models"][name], pictures["rows"][name]
        ax = axes[row][0]
        ax.imshow(pictures["query"])
        ax.set_title(f"query ({qtext})\n{q.get('value') or '?'}", fontsize=7)
        ax.set_ylabel(f"{m['label']}\n{m['hit_count']}/{len(m['hits'])} hits", fontsize=8, rotation=0,
                      ha="right", va="center")
        for i in range(K):
            ax = axes[row][1 + i]
            if i < len(m["hits"]):
                h = m["hits"][i]
                ax.imshow(pics["hits"][i])
                mark = {True: "✓", False: "✗", None: "?"}[h["hit"]]
                ax.set_title(f"{mark} {h['value'] or '?'}\n#{h['rank']} · {h['score']:.3f}", fontsize=7,
                             color=colours[h["hit"]])
                for spine in ax.spines.values():
                    spine.set_edgecolor(colours[h["hit"]])
                    spine.set_linewidth(3)
        ax = axes[row][-1]
        mm = m.get("main_map") or {}
        if pics["map"] is not None:
            ax.imshow(pics["map"])
            # one number: the map's share on the region, beside what a uniform map would put there
            where = (f"{mm['in_region_percent']:.0f}% on the region (uniform {mm['region_percent']:.0f}%)"
                     if mm.get("in_region_percent") is not None and mm.get("region_percent") is not None else "")
            ax.set_title(f"{mm.get('title', 'map')[:28]}\n{where}", fontsize=7)
        else:
            ax.set_title("no map", fontsize=7)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"ProFashion Explorer: {record['gallery_title']}, attribute {record['attribute']}", fontsize=10)
    fig.tight_layout(rect=(0.0, 0.0, 0.93 if mapped else 1.0, 1.0))  # the colour bar's room at the right
    if mapped:
        outlined = any((m.get("main_map") or {}).get("region_percent") is not None for m in record["models"].values())
        bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), CMAP), cax=fig.add_axes((0.945, 0.3, 0.012, 0.4)),
                           ticks=[0, 0.5, 1])
        bar.ax.set_yticklabels(["0 low", "0.5", "1 high"], fontsize=6)
        bar.ax.set_title("maps", fontsize=7)
        bar.set_label("each map scaled to its own range" + ("; white line = ground-truth region" if outlined else ""),
                      fontsize=6, labelpad=2)
        bar.ax.yaxis.set_label_position("left")
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)


def export_case(catalog, path, attribute, models, root: str | os.PathLike) -> tuple[Path, Path]:
    """Write the comparison of ``models`` for the query ``path`` and ``attribute`` as (PNG, JSON) in a new folder
    under ``root``; a bad query, attribute or model choice raises the catalog's one-sentence error."""
    if not path:
        raise QueryError("nothing to export yet: pick a query first")
    record, pictures = case_record(catalog, path, attribute, models)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
    folder.mkdir()
    stem = f"profashion-{catalog.name}-{attribute}"
    png, js = folder / f"{stem}.png", folder / f"{stem}.json"
    draw_case(record, pictures, png)
    atomic_write_text(js, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    _trim(root)
    return png, js

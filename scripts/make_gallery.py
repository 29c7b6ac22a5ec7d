"""Curate the app's real-photo gallery (``galleries/products/``) from the fashion-product catalogue.

    python scripts/make_gallery.py [--dataset data/products12k] [--out galleries/products] [--min-items 8]

The gallery is the test split of the imported catalogue subset the ``products`` demo checkpoints are trained on
(``data/products12k``: ``make checkpoints`` imports it), so no gallery image was seen in training. Curation, all
deterministic:

1. an image is kept only when every value it is labelled with has at least ``--min-items`` images in the kept
   set (repeated until stable): every value the app shows has enough items to retrieve;
2. the images are copied as they are (60x80 JPEG) into ``<out>/images/``, the labels, queries and candidates of
   the kept images are renumbered (the schema, i.e. the attributes and their value lists, is the dataset's own:
   the checkpoints trained on it serve the gallery unchanged), and ``meta.json`` records the source;
3. ``NOTICE`` says where the images come from and that they are for research and teaching.

The folder is written to a temporary folder and renamed into place (:func:`profashion.io.atomic_folder`).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from profashion.data.splits import format_labels, format_pairs, load_dataset  # noqa: E402
from profashion.io import atomic_folder, atomic_write_json, atomic_write_text  # noqa: E402

SPLIT = "test"
NOTICE = """\
ProFashion Explorer: the real-photo demo gallery
================================================

These {n} images ({mb:.1f} MB) are a curated subset of the "Fashion Product Images (Small)" dataset: Myntra
e-commerce product photos, about 60x80 pixels, one product per image on a plain background, with their
catalogue attributes (masterCategory, subCategory, articleType, baseColour, usage, gender, season).

Source: the public copy of the dataset in the GitHub repository tanmay0401/multimodal-recommendation-engine
(images and the five-field descriptions), gender and season from a cleaned copy of the original styles.csv
(claragarciaperez9/fashion_items_classification), as described in ../shared/data/fashion-product-small/README.md
of the project's workspace. The upstream dataset is described as MIT-licensed.

They are shipped here for research and teaching only: as the second gallery of the app, to show the retrieval
models at work on real photos. They are not part of the project's code licence; do not redistribute them
separately from this purpose.

Selection: the test split of the 12,000-row subset imported with `profashion import-csv ... --eval-layout
all-attributes` (the split the products demo checkpoints were not trained on), keeping only images whose every
labelled value has at least {min_items} images in the gallery. Regenerate with `python scripts/make_gallery.py`.
"""


def curate(labels: list[dict[int, int]], min_items: int) -> list[int]:
    """The kept image ids: every labelled value of a kept image has at least ``min_items`` kept images."""
    keep = set(range(len(labels)))
    while True:
        count = collections.Counter((a, v) for i in keep for a, v in labels[i].items())
        drop = {i for i in keep if any(count[(a, v)] < min_items for a, v in labels[i].items())}
        if not drop:
            return sorted(keep)
        keep -= drop


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default=str(REPO / "data" / "products12k"), help="the imported catalogue subset")
    p.add_argument("--out", default=str(REPO / "galleries" / "products"), help="the gallery folder to write")
    p.add_argument("--min-items", type=int, default=8, help="images each shown value needs (default 8)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing gallery folder")
    args = p.parse_args(argv)

    ds = load_dataset(args.dataset)
    s = ds.split(SPLIT)
    n_attr = ds.schema.num_attributes
    known = s.known_values(n_attr)
    labels = [{a: int(v) for a, v in enumerate(row) if v >= 0} for row in known]
    kept = curate(labels, args.min_items)
    new_id = {old: new for new, old in enumerate(kept)}
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        print(f"{out} exists: pass --overwrite to replace it", file=sys.stderr)
        return 2

    def pairs(rows):
        rows = [r for r in rows if int(r[0]) in new_id]
        return [(new_id[int(f)], int(a), int(v)) for f, a, v in rows]

    size = 0
    with atomic_folder(out) as tmp:
        (tmp / "images").mkdir()
        names = []
        for old in kept:
            src = ds.image_path(SPLIT, old)
            dst = tmp / "images" / src.name
            shutil.copyfile(src, dst)
            size += dst.stat().st_size
            names.append(f"images/{src.name}")
        atomic_write_text(tmp / f"filenames_{SPLIT}.txt", "\n".join(names) + "\n")
        atomic_write_text(tmp / f"label_{SPLIT}.txt",
                          format_labels([sorted(labels[old].items()) for old in kept]))
        atomic_write_text(tmp / f"query_{SPLIT}.txt", format_pairs(pairs(s.queries)))
        atomic_write_text(tmp / f"candidate_{SPLIT}.txt", format_pairs(pairs(s.candidates)))
        meta = json.loads((Path(args.dataset) / "meta.json").read_text())
        meta.update({"NAME": "products-gallery", "IMAGE_ROOT": ".",
                     "SOURCE": {"dataset": meta.get("NAME"), "split": SPLIT, "images": len(kept),
                                "min_items_per_value": args.min_items,
                                "command": "python scripts/make_gallery.py"}})
        meta.pop("IMPORT", None)
        atomic_write_json(tmp / "meta.json", meta)
        atomic_write_text(tmp / "NOTICE", NOTICE.format(n=len(kept), mb=size / 1e6, min_items=args.min_items))
    print(json.dumps({"images": len(kept), "of": len(labels), "megabytes": round(size / 1e6, 2), "out": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Ship what the shipped checkpoints compute: each one's gallery index and every t-SNE and UMAP projection of it.

    python scripts/ship_indexes.py [--gallery synthetic|products ...] [--cache DIR] [--force] [--methods tsne umap]

For each embedded gallery of the app (``profashion.explorer.galleries.default_galleries``: the synthetic garments served
by ``checkpoints/``, the product photos served by ``checkpoints/products/``) and each of its checkpoints, the app's
own catalog builds (or reuses, from ``--cache``) the gallery index, projects every attribute's space of every
labelled item with each method (seed 0, as the app does), and writes the compact copy into
``<checkpoint>/gallery-index/`` (:mod:`profashion.retrieval.shipped`: float16 embeddings, the projections'
coordinates and scores, the fingerprints of the checkpoint, the gallery and its images). The app then starts from
these instead of embedding and projecting. A checkpoint whose shipped copy already matches is left as it is unless
``--force``. Resumable: the index and the projections are cached in ``--cache`` as they are made.

Prints one JSON line per checkpoint (seconds, projections, bytes) and the total bytes shipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from profashion.explorer.catalog import FAMILIAR_FILE, GALLERY_SPLIT, Catalog  # noqa: E402
from profashion.explorer.galleries import default_galleries  # noqa: E402
from profashion.paths import user_cache_home  # noqa: E402
from profashion.retrieval import shipped  # noqa: E402
from profashion.retrieval.projection import DegenerateSpaceError  # noqa: E402

MAX_POINTS = 5000  # the app's Catalog.max_points: every item of both galleries


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file()) if path.is_dir() else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gallery", nargs="*", default=None, help="gallery names (default: every embedded gallery)")
    p.add_argument("--cache", default=str(user_cache_home() / "profashion-ship"),
                   help="cache of the indexes and projections made on the way (default profashion-ship in "
                        "$XDG_CACHE_HOME, else ~/.cache)")
    p.add_argument("--methods", nargs="*", default=["tsne", "umap"])
    p.add_argument("--force", action="store_true", help="pack again a checkpoint whose shipped copy matches")
    args = p.parse_args()

    total = 0
    for d in default_galleries(REPO):
        if args.gallery and d.name not in args.gallery:
            continue
        catalog = Catalog(d.checkpoints, args.cache, gallery=d.gallery, name=d.name, max_points=MAX_POINTS,
                          use_shipped=False)
        # every checkpoint is packed from an index the app built itself, never from the copy being replaced
        catalog.load(log=lambda m: print(m, file=sys.stderr, flush=True))
        for e in catalog.skipped:
            print(json.dumps({"gallery": d.name, "model": e.name, "skipped": e.error}), flush=True)
        for name, entry in catalog.models.items():
            dest = entry.checkpoint / shipped.FOLDER
            t0 = time.perf_counter()
            if not args.force and dest.is_dir():
                try:
                    shipped.check(dest, entry.checkpoint, catalog.dataset, GALLERY_SPLIT, entry.fingerprint)
                    total += folder_bytes(dest)
                    print(json.dumps({"gallery": d.name, "model": name, "kept": True,
                                      "bytes": folder_bytes(dest)}), flush=True)
                    continue
                except shipped.ShippedIndexError:
                    pass
            projections, failed = [], {}
            for method in args.methods:
                for attribute in catalog.attributes:
                    try:
                        projections.append(catalog.projection(name, attribute, method))
                    except DegenerateSpaceError as exc:  # a collapsed space: the app says so when asked
                        failed[f"{method}-{attribute}"] = str(exc)
            shipped.pack(catalog.engine.index(name), catalog.dataset, dest, projections)
            total += folder_bytes(dest)
            print(json.dumps({"gallery": d.name, "model": name, "seconds": round(time.perf_counter() - t0, 1),
                              "projections": len(projections), "failed": failed,
                              "bytes": folder_bytes(dest)}), flush=True)
        # the gallery's "is it like us?" reference (profashion.retrieval.familiar): a cold start need not embed it
        if catalog.ensure_familiarity(log=lambda m: print(m, file=sys.stderr, flush=True)) is not None:
            dest = Path(d.checkpoints) / FAMILIAR_FILE
            catalog.familiarity.save(dest)
            total += dest.stat().st_size
    print(json.dumps({"total_bytes": total, "total_mb": round(total / 2**20, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

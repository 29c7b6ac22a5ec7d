"""ProFashion Explorer: the app entry point (`make demo`, Hugging Face Spaces).

Loads the embedded galleries (the synthetic garments, generated into the cache folder and served by every
checkpoint under `checkpoints/`; the real product photos of `galleries/products/`, served by the checkpoints
under `checkpoints/products/`; a gallery that cannot load is skipped with its reason) and launches the Gradio
app. Environment:

- `PORT`: the port to listen on (default 7860);
- `PROFASHION_CHECKPOINTS`: the checkpoints folder (default `checkpoints/` beside this file);
- `PROFASHION_CACHE`: where the gallery, its indexes and projections are cached (default
  `~/.cache/profashion`);
- `PROFASHION_DEVICE`: where the models run (default `cpu`; `cuda` or `cuda:N` for a GPU); on a ZeroGPU Space
  (`SPACES_ZERO_GPU` set by Hugging Face) always `cuda`, each model call inside `spaces.GPU`;
- `PROFASHION_JOBS`: the fine-tuning jobs' folder (default `<cache>/jobs`);
- `PROFASHION_DATA_ROOTS`: the folders jobs may train on, os.pathsep-separated (default `data/` beside this
  file, `../shared/data` beside the repository and the cache).

The repository's folders are worked out here only: the library takes its roots as arguments.

On Hugging Face Spaces (`SPACE_ID` set) it listens on 0.0.0.0, elsewhere on 127.0.0.1 unless
`GRADIO_SERVER_NAME` says otherwise.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true"):
    import spaces  # noqa: F401 - on ZeroGPU it must come before torch (it makes "cuda" usable at start-up)

REPO = Path(__file__).resolve().parent


def warm(galleries, log) -> None:
    """Serve every gallery's models (from their shipped or cached indexes, or indexing the gallery), then
    precompute the t-SNE projections not shipped (cached on disk) at low priority, so that switching the Embeddings
    tab's models or attribute answers at once. Runs while the app already answers: a model not served yet is listed
    as warming up."""
    from profashion.ui.tab_embeddings import warm_projections

    t0 = time.perf_counter()
    galleries.load_models(log)
    for catalog in galleries.catalogs.values():
        if catalog.models:
            log(f"{catalog.name} gallery: {catalog.num_items} images, models: {', '.join(catalog.models)}")
        else:
            log(f"{catalog.name} gallery: {catalog.empty_message()}")
    log(f"every model served {time.perf_counter() - t0:.1f} s after the app started to listen")
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 15)  # this thread only (Linux)
    except (AttributeError, OSError):
        pass
    for catalog in galleries.catalogs.values():
        done = warm_projections(catalog, methods=("tsne", "umap"), log=None)
        log(f"{catalog.name} gallery: {done['projections']} projections ready ({done['computed']} computed, "
            f"{len(done['failed'])} failed) in {done['seconds']:.0f} s")


def main(defs=None, **catalog_kwargs) -> int:
    """Load the galleries (``defs``: the embedded ones by default; tests pass small ones) and serve the app."""
    from profashion.device import serving_device
    from profashion.ui import build_demo, launch_kwargs
    from profashion.ui.galleries import Galleries, default_galleries
    from profashion.ui.jobs import JobManager, default_data_roots, default_jobs_root

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    checkpoints = os.environ.get("PROFASHION_CHECKPOINTS") or REPO / "checkpoints"
    # the galleries and the models' names now (seconds); the models themselves once the port answers (warm)
    galleries = Galleries.load(defs if defs is not None else default_galleries(REPO, checkpoints), log=log,
                               models=False, **{"device": serving_device(), **catalog_kwargs})
    for catalog in galleries.catalogs.values():
        log(f"{catalog.name} gallery: {catalog.num_items} images, models warming up: {', '.join(catalog.listed)}")
        for entry in catalog.skipped:
            log(f"skipped: {entry.error}")
    catalog = galleries.default
    data_roots = default_data_roots(catalog.cache_root, [REPO / "data", REPO.parent / "shared" / "data"])
    jobs = JobManager(default_jobs_root(catalog.cache_root), data_roots, home=REPO)
    demo = build_demo(galleries, jobs)
    host = "0.0.0.0" if os.environ.get("SPACE_ID") else os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    demo.launch(server_name=host, server_port=int(os.environ.get("PORT", 7860)), prevent_thread_lock=True,
                **launch_kwargs(galleries))
    threading.Thread(target=warm, args=(galleries, log), daemon=True, name="warm-up").start()
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())

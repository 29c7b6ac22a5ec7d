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

import importlib.abc
import importlib.util
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


class _NoStubRewrite(importlib.abc.MetaPathFinder):
    """Gradio 6 rewrites its components' ``.pyi`` type stubs at every import (``gradio.component_meta.
    create_or_modify_pyi``, called for each component class): 2.4-2.8 s of the app's 2-core start, for files only a
    type checker reads. This finder loads ``gradio.component_meta`` as usual, then makes that one function a no-op;
    a Gradio without it is left as it is."""

    def find_spec(self, name, path=None, target=None):
        if name != "gradio.component_meta":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            if hasattr(module, "create_or_modify_pyi"):
                module.create_or_modify_pyi = lambda *args, **kwargs: None

        spec.loader.exec_module = exec_module
        return spec


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
    galleries.ensure_familiarity(log)  # an upload unlike the galleries is told so (cached: once per gallery)
    for catalog in galleries.catalogs.values():
        done = warm_projections(catalog, methods=("tsne", "umap"), log=None)
        log(f"{catalog.name} gallery: {done['projections']} projections ready ({done['computed']} computed, "
            f"{len(done['failed'])} failed) in {done['seconds']:.0f} s")


STARTING_PAGE = (b'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">'
                 b'<meta name="viewport" content="width=device-width, initial-scale=1"><title>ProFashion Explorer'
                 b'</title></head><body style="font-family: sans-serif; margin: 3em"><h1>ProFashion Explorer</h1>'
                 b'<p role="status">Starting: the app loads its galleries and opens in a few seconds. This page '
                 b'reloads itself.</p></body></html>')


class StartingPage:
    """The port answers at once: while torch, Gradio and the galleries load (5-13 s on 2 cores), ``GET /`` is a
    page that says the app is starting and reloads itself every 2 s, and every other request a 503 (so nothing
    takes it for the app: ``/config`` is not there yet). :meth:`close` frees the port just before Gradio binds it.
    Standard library only; a port already taken is left to Gradio to report."""

    def __init__(self, host: str, port: int):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the standard library's name
                root = self.path.split("?", 1)[0] == "/"
                body = STARTING_PAGE if root else b"starting"
                self.send_response(200 if root else 503)
                self.send_header("Content-Type", "text/html; charset=utf-8" if root else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                if not root:
                    self.send_header("Retry-After", "2")
                self.end_headers()
                self.wfile.write(body)

            do_HEAD = do_GET

            def log_message(self, *args):  # quiet
                pass

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError:
            self.server = None
            return
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True, name="starting-page").start()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def main(defs=None, **catalog_kwargs) -> int:
    """Load the galleries (``defs``: the embedded ones by default; tests pass small ones) and serve the app."""
    host = "0.0.0.0" if os.environ.get("SPACE_ID") else os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    port = int(os.environ.get("PORT", 7860))
    starting = StartingPage(host, port)
    if "gradio" not in sys.modules:  # imported already (a test's process): nothing to skip
        sys.meta_path.insert(0, _NoStubRewrite())
    from profashion.device import serving_device
    from profashion.explorer.galleries import Galleries, default_galleries
    from profashion.explorer.jobs import JobManager, default_data_roots, default_jobs_root, private_folders
    from profashion.paths import checkpoints_root
    from profashion.ui import build_demo, launch_kwargs

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    checkpoints = checkpoints_root(REPO / "checkpoints")
    # the galleries and the models' names now (seconds); the models themselves once the port answers (warm)
    galleries = Galleries.load(defs if defs is not None else default_galleries(REPO, checkpoints), log=log,
                               models=False, **{"device": serving_device(), **catalog_kwargs})
    for catalog in galleries.catalogs.values():
        log(f"{catalog.name} gallery: {catalog.num_items} images, models warming up: {', '.join(catalog.listed)}")
        for entry in catalog.skipped:
            log(f"skipped: {entry.error}")
    catalog = galleries.default
    data_roots = default_data_roots(catalog.cache_root, [REPO / "data", REPO.parent / "shared" / "data"])
    jobs = JobManager(default_jobs_root(catalog.cache_root), data_roots, home=REPO,
                      private=private_folders(catalog.cache_root))
    demo = build_demo(galleries, jobs)
    starting.close()
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, **launch_kwargs(galleries))
    threading.Thread(target=warm, args=(galleries, log), daemon=True, name="warm-up").start()
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ProFashion Explorer: the app entry point (`make demo`, Hugging Face Spaces).

Builds the catalog of the embedded default (a synthetic gallery generated into the cache folder, and
every checkpoint under `checkpoints/`) and launches the Gradio app. Environment:

- `PORT`: the port to listen on (default 7860);
- `PROFASHION_CHECKPOINTS`: the checkpoints folder (default `checkpoints/` beside this file);
- `PROFASHION_CACHE`: where the gallery, its indexes and projections are cached (default
  `~/.cache/profashion`);
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
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent


def main() -> int:
    from profashion.ui import Catalog, build_demo, launch_kwargs
    from profashion.ui.jobs import JobManager, default_data_roots, default_jobs_root

    checkpoints = os.environ.get("PROFASHION_CHECKPOINTS") or REPO / "checkpoints"
    catalog = Catalog(checkpoints).load(log=lambda msg: print(msg, file=sys.stderr, flush=True))
    if catalog.models:
        print(f"models: {', '.join(catalog.models)}", file=sys.stderr, flush=True)
    else:
        print(catalog.empty_message(), file=sys.stderr, flush=True)
    for entry in catalog.skipped:
        print(f"skipped: {entry.error}", file=sys.stderr, flush=True)
    data_roots = default_data_roots(catalog.cache_root, [REPO / "data", REPO.parent / "shared" / "data"])
    jobs = JobManager(default_jobs_root(catalog.cache_root), data_roots, home=REPO)
    demo = build_demo(catalog, jobs)
    host = "0.0.0.0" if os.environ.get("SPACE_ID") else os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    demo.launch(server_name=host, server_port=int(os.environ.get("PORT", 7860)), **launch_kwargs(catalog))
    return 0


if __name__ == "__main__":
    sys.exit(main())

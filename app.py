"""ProFashion Explorer: the app entry point (`make demo`, Hugging Face Spaces).

Builds the catalog of the embedded default (a synthetic gallery generated into the cache folder, and
every checkpoint under `checkpoints/`) and launches the Gradio app. Environment:

- `PORT`: the port to listen on (default 7860);
- `PROFASHION_CHECKPOINTS`: the checkpoints folder (default `checkpoints/` beside this file);
- `PROFASHION_CACHE`: where the gallery, its indexes and projections are cached (default
  `~/.cache/profashion`).

On Hugging Face Spaces (`SPACE_ID` set) it listens on 0.0.0.0, elsewhere on 127.0.0.1 unless
`GRADIO_SERVER_NAME` says otherwise.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    from profashion.ui import Catalog, build_demo, launch_kwargs

    catalog = Catalog().load(log=lambda msg: print(msg, file=sys.stderr, flush=True))
    if catalog.models:
        print(f"models: {', '.join(catalog.models)}", file=sys.stderr, flush=True)
    else:
        print(catalog.empty_message(), file=sys.stderr, flush=True)
    for entry in catalog.skipped:
        print(f"skipped: {entry.error}", file=sys.stderr, flush=True)
    demo = build_demo(catalog)
    host = "0.0.0.0" if os.environ.get("SPACE_ID") else os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    demo.launch(server_name=host, server_port=int(os.environ.get("PORT", 7860)), **launch_kwargs(catalog))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The app as a user meets it: start-up time, request latency, memory. Prints one JSON object.

    python benchmarks/bench_app.py [--retrieve 20] [--explore 8] [--embeddings 0] [--cache DIR] [--port 7899]

- ``startup_s``: from launching ``app.py`` (a subprocess, as ``make demo`` does) to the first served page;
  with a warm cache (the gallery and each model's index already built) unless ``--cache`` is empty;
- ``retrieve_ms`` / ``explore_ms``: p50 / p95 over requests through gradio_client, every loaded model at
  once, cycling over gallery images and attributes;
- ``retrieve_same_query_new_attribute_ms``: the query just asked, under the next attribute (the engine embeds a
  query once per model under every attribute, so no model runs);
- with ``--embeddings N``: ``embeddings_first_s``, the first ``/embeddings`` (t-SNE) of N model pairs and
  attributes (new projections, unless the cache already holds them); ``embeddings_warm_ms``, the same N again in
  another order, each a switch of pair or attribute from the one before, with the projections cached (what a
  visitor waits for once the start-up warm-up is done); ``embeddings_kb``, the explorer's data per answer;
  ``neighbours_ms``, N ``/neighbours`` of one item in both models (the list under a clicked point: the highlight
  itself is drawn in the browser without a request);
- ``rss_mb``: resident memory of the app process after start-up and after the requests (and its peak).

Checkpoints: ``PROFASHION_CHECKPOINTS`` when set; otherwise a temporary checkpoints root of symlinks to
the trained runs found in ``runs/`` (one per method, the best validation mAP on ``synth``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> dict:
    out = {}
    try:
        for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
            if ln.startswith(("VmRSS:", "VmHWM:")):
                out[ln.split(":")[0]] = round(int(ln.split()[1]) / 1024, 1)
    except OSError:
        pass
    # the app's children (none expected) would count too
    return {"rss": out.get("VmRSS"), "peak": out.get("VmHWM")}


def checkpoints_from_runs(tmp: Path) -> dict[str, str]:
    """A checkpoints root of symlinks: per method, the synth run whose best/ scored highest."""
    best: dict[str, tuple[float, Path]] = {}
    for cfg in sorted((REPO / "runs").glob("*/best/config.json")):
        try:
            c = json.loads(cfg.read_text())
        except ValueError:
            continue
        if (c.get("dataset") or {}).get("name") != "synth":
            continue
        score = float((c.get("trainer") or {}).get("best") or -1)
        if c["model"] not in best or score > best[c["model"]][0]:
            best[c["model"]] = (score, cfg.parent)
    for method, (_, path) in best.items():
        (tmp / method).symlink_to(path, target_is_directory=True)
    return {m: str(p) for m, (_, p) in best.items()}


def stop_app(proc: subprocess.Popen, log, grace: float = 30.0) -> None:
    """Terminate the app started by a benchmark (killed after ``grace`` seconds) and close its log."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def pct(xs: list[float]) -> dict | None:
    if not xs:
        return None
    a = np.asarray(xs)
    return {"p50": round(float(np.percentile(a, 50)), 1), "p95": round(float(np.percentile(a, 95)), 1),
            "n": len(xs)}


def bench_embeddings(client, names: list[str], attrs: list[str], n: int, num_items: int) -> dict:
    """``/embeddings`` of ``n`` (model A, model B, attribute) choices, first (projected or read from the cache),
    then again in another order (cached: each a switch of pair or attribute); ``n`` ``/neighbours``."""
    m = len(names)
    combos = [(names[i % m], names[(i + 1 + i // m) % m], attrs[i % len(attrs)]) for i in range(n)]
    first, warm, sizes = [], [], []
    for a, b, attr in combos:
        t = time.perf_counter()
        client.predict(a, b, attr, "tsne", api_name="/embeddings")
        first.append(time.perf_counter() - t)
    order = combos[1::2] + combos[0::2]  # consecutive choices differ in pair or attribute
    for a, b, attr in order:
        t = time.perf_counter()
        data, *_ = client.predict(a, b, attr, "tsne", api_name="/embeddings")
        warm.append(1000 * (time.perf_counter() - t))
        sizes.append(len(json.dumps(data)) / 1024)
    nn = []
    for i in range(n):
        a, b, attr = combos[i]
        t = time.perf_counter()
        client.predict(a, b, attr, (37 * i) % num_items, api_name="/neighbours")
        nn.append(1000 * (time.perf_counter() - t))
    return {"embeddings_first_s": {"p50": round(float(np.median(first)), 2), "max": round(max(first), 2),
                                   "n": n},
            "embeddings_warm_ms": pct(warm), "embeddings_kb": round(float(np.mean(sizes)), 1),
            "neighbours_ms": pct(nn), "embeddings_choices": [list(c) for c in combos]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--retrieve", type=int, default=20, help="Retrieve requests (default 20)")
    p.add_argument("--explore", type=int, default=8, help="Explore requests (default 8)")
    p.add_argument("--embeddings", type=int, default=0,
                   help="model pairs x attributes projected, then switched between, and /neighbours requests "
                        "(default 0: none)")
    p.add_argument("--cache", default=None, help="app cache (default: PROFASHION_CACHE or ~/.cache/profashion)")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()

    from gradio_client import Client, handle_file

    tmp = Path(tempfile.mkdtemp(prefix="bench-app-"))
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    env.pop("SPACE_ID", None)
    if os.environ.get("PROFASHION_CHECKPOINTS"):
        sources = {"PROFASHION_CHECKPOINTS": os.environ["PROFASHION_CHECKPOINTS"]}
    else:
        ck = tmp / "checkpoints"
        ck.mkdir()
        sources = checkpoints_from_runs(ck)
        env["PROFASHION_CHECKPOINTS"] = str(ck)
    if args.cache:
        env["PROFASHION_CACHE"] = args.cache
    env.setdefault("PROFASHION_JOBS", str(tmp / "jobs"))
    port = args.port or free_port()
    env["PORT"] = str(port)
    url = f"http://127.0.0.1:{port}/"
    log = open(tmp / "app.log", "wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py")], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        startup = None
        while proc.poll() is None and time.perf_counter() - t0 < 1800:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200 and b"<html" in r.read(4096).lower():
                        startup = time.perf_counter() - t0
                        break
            except OSError:
                time.sleep(0.2)
        if startup is None:
            print((tmp / "app.log").read_text()[-3000:], file=sys.stderr)
            return 1
        mem_start = rss_mb(proc.pid)
        client = Client(url, verbose=False, download_files=False)  # a browser loads the result images lazily
        config = json.loads(urllib.request.urlopen(url + "config", timeout=30).read())
        models = next(c["props"]["choices"] for c in config["components"]
                      if c.get("props", {}).get("elem_id") == "models")
        names = [c[1] if isinstance(c, (list, tuple)) else c for c in models]
        from profashion.data.splits import load_dataset
        from profashion.ui.catalog import GallerySpec, default_cache_root

        cache = Path(env.get("PROFASHION_CACHE") or default_cache_root())
        ds = load_dataset(cache / GallerySpec().folder_name())
        attrs = list(ds.schema.names)
        imgs = [str(ds.image_path("test", i)) for i in range(0, 400, 7)]
        client.predict(handle_file(imgs[0]), attrs[0], names, api_name="/retrieve")  # warm-up
        ret, same_query = [], []
        for i in range(args.retrieve):  # a new query each time (first time seen: every model embeds it)
            t = time.perf_counter()
            client.predict(handle_file(imgs[i % len(imgs)]), attrs[i % len(attrs)], names, api_name="/retrieve")
            ret.append(1000 * (time.perf_counter() - t))
            # the same query under the next attribute: embedded once, asked again (no model runs)
            t = time.perf_counter()
            client.predict(handle_file(imgs[i % len(imgs)]), attrs[(i + 1) % len(attrs)], names,
                           api_name="/retrieve")
            same_query.append(1000 * (time.perf_counter() - t))
        exp = []
        for i in range(args.explore):
            t = time.perf_counter()
            client.predict(handle_file(imgs[(3 * i + 1) % len(imgs)]), attrs[i % len(attrs)], names,
                           api_name="/explore")
            exp.append(1000 * (time.perf_counter() - t))
        emb = bench_embeddings(client, names, attrs, args.embeddings, ds.split("test").num_images) if args.embeddings > 0 else {}
        mem_end = rss_mb(proc.pid)
        out = {
            "startup_s": round(startup, 2),
            "models": names,
            "checkpoints": sources,
            "retrieve_ms": pct(ret),
            "retrieve_same_query_new_attribute_ms": pct(same_query),
            "explore_ms": pct(exp),
            **emb,
            "rss_mb": {"after_start": mem_start["rss"], "after_requests": mem_end["rss"], "peak": mem_end["peak"]},
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "cache": str(cache),
        }
        print(json.dumps(out, indent=2))
        return 0
    finally:
        stop_app(proc, log)


if __name__ == "__main__":
    sys.exit(main())

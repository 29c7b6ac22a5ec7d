"""The app as a visitor meets it, from a cold start: start-up, the first answer, then each request beside the time its
models take in-process. Prints one JSON object.

    python benchmarks/bench_app.py [--cache DIR] [--retrieve 12] [--explore 6] [--embeddings 12] [--from-runs]

Phases (the app is ``app.py`` in a subprocess, as ``make demo`` and a Space start it; the shipped checkpoints unless
``PROFASHION_CHECKPOINTS`` or ``--from-runs``):

1. **cold start** (``--cache`` missing or empty: a new temporary cache, as a Space after a restart): ``port_s``, the
   port's first page (app.py's starting page until the app is up); ``app_s``, the app itself (its ``/config``); ``first_retrieve_all_s``, until a Retrieve with every model answers on every gallery with no
   model warming up; ``all_served_s``, until ``/galleries`` lists no model warming up;
2. requests on the warm app once every model is served, every model at once, on each gallery, through the HTTP API
   (:class:`Http`: the query uploaded, then ``/gradio_api/call/<name>``; the result files not downloaded, as a
   browser loads thumbnails lazily): ``retrieve_ms`` (and through gradio_client, ``retrieve_ms_gradio_client``),
   ``explore_ms``, ``embeddings_switch_ms`` (a switch of model pair, method or attribute), ``noop_call_ms`` (the
   ``/galleries`` call: the protocol's own floor), the explorer's points per plot against the gallery's images;
3. **in-process** (this process loads the same galleries from the same cache, then times the same requests):
   ``models_ms``, Retrieve's embed + search of every model (``Catalog.search``); ``handler_ms``, the whole
   handler (thumbnails, HTML); the API's ``outside_models_ms`` is its time minus ``models_ms``;
4. **warm start** (the same cache, the app started again): ``port_s``, ``app_s`` and ``all_served_s``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


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
            "max": round(float(a.max()), 1), "n": len(xs)}


class App:
    """app.py in a subprocess with its log in a file; ``port_s`` once it serves its page."""

    def __init__(self, env: dict, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = open(log_path, "ab")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, str(REPO / "app.py")], cwd=REPO,
                                     env={**env, "PORT": str(self.port)}, stdout=self.log, stderr=subprocess.STDOUT)
        self.port_s = self._wait_page()

    def _wait_page(self, limit: float = 1800) -> float:
        """Seconds until the port answers ``/`` (app.py's starting page, then the app); ``app_s`` is set to the
        seconds until the app itself answers (its ``/config``)."""
        port_s = None
        while self.proc.poll() is None and time.perf_counter() - self.t0 < limit:
            try:
                if port_s is None:
                    with urllib.request.urlopen(self.url, timeout=5) as r:
                        if r.status == 200 and b"<html" in r.read(4096).lower():
                            port_s = time.perf_counter() - self.t0
                with urllib.request.urlopen(self.url + "config", timeout=5) as r:
                    if r.status == 200:
                        self.app_s = time.perf_counter() - self.t0
                        return port_s if port_s is not None else self.app_s
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"the app did not serve its page; see {self.log.name}")

    def since(self) -> float:
        return time.perf_counter() - self.t0

    def stop(self) -> None:
        stop_app(self.proc, self.log)


def galleries_info(client) -> list[dict]:
    return [g for g in client.predict(api_name="/galleries") if g.get("available")]


def wait_all_served(client, app: App, limit: float = 1800) -> float:
    while app.since() < limit:
        if not any(g.get("warming_up") for g in galleries_info(client)):
            return app.since()
        time.sleep(0.2)
    raise SystemExit("the models were still warming up after 30 minutes")


def queries(gallery: dict) -> tuple[list[str], list[str]]:
    """(image paths, attributes) of a gallery, read from its dataset folder (the cache's or the repository's)."""
    from profashion.data.splits import load_dataset
    from profashion.explorer.catalog import GallerySpec
    from profashion.paths import cache_root

    if gallery["name"] == "synthetic":
        root = cache_root() / GallerySpec().folder_name()
    else:
        root = REPO / "galleries" / gallery["name"]
    ds = load_dataset(root)
    n = ds.split("test").num_images
    return [str(ds.image_path("test", i)) for i in range(0, n, max(1, n // 60))], list(ds.schema.names)


MS = re.compile(r"embedded in ([0-9.]+) ms, searched in ([0-9.]+) ms")


class Http:
    """The app's HTTP API as any client calls it (curl, a browser's fetch): ``POST /gradio_api/upload`` for a file,
    ``POST /gradio_api/call/<name>`` then its event stream, on one kept-alive connection. gradio_client adds its own
    threads and stream set-up on top (about 120 ms a call on this 2-core machine, measured against a no-op endpoint),
    which is the client's time, not the app's: both are reported."""

    def __init__(self, url: str):
        import httpx

        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=120)

    def upload(self, path: str) -> dict:
        with open(path, "rb") as f:
            r = self.http.post("/gradio_api/upload", files={"files": (Path(path).name, f)})
        r.raise_for_status()
        return {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}, "orig_name": Path(path).name}

    def call(self, name: str, *data):
        r = self.http.post(f"/gradio_api/call/{name}", json={"data": list(data)})
        r.raise_for_status()
        event, out = None, None
        with self.http.stream("GET", f"/gradio_api/call/{name}/{r.json()['event_id']}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    out = json.loads(line[5:])
                    break
        if event != "complete":
            raise RuntimeError(f"/{name} answered {event}: {out}")
        return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", default=None, help="the app's cache (default: a new, empty one: a cold start)")
    p.add_argument("--retrieve", type=int, default=12, help="Retrieve requests per gallery (default 12)")
    p.add_argument("--explore", type=int, default=6, help="Explore requests per gallery (default 6)")
    p.add_argument("--embeddings", type=int, default=12, help="Embeddings switches per gallery (default 12)")
    p.add_argument("--from-runs", action="store_true", help="the best synth run per method in runs/, not checkpoints/")
    args = p.parse_args()

    from gradio_client import Client, handle_file

    tmp = Path(tempfile.mkdtemp(prefix="bench-app-"))
    cache = Path(args.cache) if args.cache else tmp / "cache"
    cold = not cache.is_dir() or not any(cache.iterdir())
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PROFASHION_CACHE": str(cache),
           "PROFASHION_JOBS": str(tmp / "jobs")}
    env.pop("SPACE_ID", None)
    if args.from_runs:
        (tmp / "checkpoints").mkdir()
        checkpoints_from_runs(tmp / "checkpoints")
        env["PROFASHION_CHECKPOINTS"] = str(tmp / "checkpoints")
    os.environ["PROFASHION_CACHE"] = str(cache)
    out: dict = {"cache": "empty (cold start)" if cold else "given", "cpus": os.cpu_count()}

    app = App(env, tmp / "app.log")
    try:
        client = Client(app.url, verbose=False, download_files=False)
        galleries = galleries_info(client)
        first = {}
        for g in galleries:  # a Retrieve with every model, until no model answers "warming up"
            imgs, attrs = queries(g)
            names = [m["name"] for m in g["models"] + g.get("warming_up", [])]
            while True:
                status = client.predict(handle_file(imgs[0]), attrs[0], names, g["name"],
                                                 api_name="/retrieve")[2]
                if "warming up" not in status:
                    break
                time.sleep(0.2)
            first[g["name"]] = round(app.since(), 2)
        out["start"] = {"port_s": round(app.port_s, 2), "app_s": round(app.app_s, 2), "first_retrieve_all_s": max(first.values()),
                        "first_retrieve_s": first, "all_served_s": round(wait_all_served(client, app), 2),
                        "rss_mb": rss_mb(app.proc.pid)}
        galleries = galleries_info(client)
        # the start-up's low-priority work (every gallery's plots, from the shipped projections) done before timing
        while app.since() < 1800 and open(app.log.name, "rb").read().count(b"projections ready (") < len(galleries):
            time.sleep(0.5)
        out["start"]["plots_ready_s"] = round(app.since(), 2)
        api = {}
        for g in galleries:
            imgs, attrs = queries(g)
            names = [m["name"] for m in g["models"]]
            ret, models_ms, exp, emb, points = [], [], [], [], []
            http, via_client = Http(app.url), []
            for i in range(args.retrieve):  # a new query image each time: uploaded, then every model embeds it
                t = time.perf_counter()
                status = http.call("retrieve", http.upload(imgs[(i + 1) % len(imgs)]), attrs[i % len(attrs)], names,
                                   g["name"])[2]
                ret.append(1000 * (time.perf_counter() - t))
                models_ms.append(sum(float(a) + float(b) for a, b in MS.findall(status)))
                t = time.perf_counter()
                client.predict(handle_file(imgs[(i + 7) % len(imgs)]), attrs[i % len(attrs)], names, g["name"],
                               api_name="/retrieve")
                via_client.append(1000 * (time.perf_counter() - t))
            for i in range(args.explore):
                t = time.perf_counter()
                http.call("explore", http.upload(imgs[(3 * i + 2) % len(imgs)]), attrs[i % len(attrs)], names,
                          g["name"])
                exp.append(1000 * (time.perf_counter() - t))
            for i in range(args.embeddings):  # each a switch: the pair, the method or the attribute changes
                a, b = names[i % len(names)], names[(i + 3) % len(names)]
                method = ("tsne", "umap")[(i // 2) % 2]
                t = time.perf_counter()
                data = http.call("embeddings", a, b, attrs[i % len(attrs)], method, g["name"])[0]
                data = json.loads(data) if isinstance(data, str) else data  # the explorer's data as JSON text
                emb.append(1000 * (time.perf_counter() - t))
                points += [len(pl["items"]) for pl in data.get("plots", [])]
            t = time.perf_counter()
            for _ in range(10):
                http.call("galleries")
            noop = 100 * (time.perf_counter() - t)
            api[g["name"]] = {"retrieve_ms": pct(ret), "retrieve_ms_gradio_client": pct(via_client),
                              "noop_call_ms": round(noop, 1), "retrieve_models_ms_server": pct(models_ms),
                              "explore_ms": pct(exp), "embeddings_switch_ms": pct(emb),
                              "points_plotted": {"min": min(points, default=0), "max": max(points, default=0),
                                                 "gallery_images": g["items"]}}
        out["api"] = api
        out["rss_mb_after_requests"] = rss_mb(app.proc.pid)
    finally:
        app.stop()

    out["in_process"] = in_process(galleries, args)
    for name, timing in out["in_process"].items():  # the API's time beyond the models' own, both measured here
        out["api"][name]["retrieve_outside_models_ms"] = round(
            out["api"][name]["retrieve_ms"]["p50"] - timing["retrieve_models_ms"]["p50"], 1)

    app = App(env, tmp / "app-warm.log")  # the same cache: a warm start
    try:
        client = Client(app.url, verbose=False, download_files=False)
        out["warm_start"] = {"port_s": round(app.port_s, 2), "app_s": round(app.app_s, 2), "all_served_s": round(wait_all_served(client, app), 2)}
    finally:
        app.stop()
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))
    return 0


def in_process(galleries: list[dict], args) -> dict:
    """The same requests in this process (the galleries loaded from the same cache): Retrieve's models alone
    (``Catalog.search``) and its whole handler, Explore's handler, Embeddings' handler."""
    from profashion.explorer.galleries import Galleries, default_galleries
    from profashion.paths import checkpoints_root
    from profashion.ui import tab_embeddings, tab_explore, tab_retrieve

    loaded = Galleries.load(default_galleries(REPO, checkpoints_root(REPO / "checkpoints")))
    res = {}
    for g in galleries:
        c = loaded.get(g["name"])
        imgs, attrs = queries(g)
        names = list(c.models)
        c.search(imgs[0], attrs[0], names)  # first call: lazy set-ups
        models, handler, exp, emb = [], [], [], []
        for i in range(args.retrieve):
            q, a = imgs[(i + 1) % len(imgs)], attrs[i % len(attrs)]
            c.engine._queries.clear()  # as a new query: every model embeds it
            t = time.perf_counter()
            c.search(q, a, names)
            models.append(1000 * (time.perf_counter() - t))
            c.engine._queries.clear()
            t = time.perf_counter()
            tab_retrieve.retrieve(c, q, a, names)
            handler.append(1000 * (time.perf_counter() - t))
        for i in range(args.explore):
            t = time.perf_counter()
            tab_explore.explore(c, imgs[(3 * i + 2) % len(imgs)], attrs[i % len(attrs)], names)
            exp.append(1000 * (time.perf_counter() - t))
        for i in range(args.embeddings):
            a, b = names[i % len(names)], names[(i + 3) % len(names)]
            t = time.perf_counter()
            tab_embeddings.explorer_data(c, a, b, attrs[i % len(attrs)], ("tsne", "umap")[(i // 2) % 2])
            emb.append(1000 * (time.perf_counter() - t))
        res[g["name"]] = {"retrieve_models_ms": pct(models), "retrieve_handler_ms": pct(handler),
                          "explore_handler_ms": pct(exp), "embeddings_handler_ms": pct(emb)}
    return res


if __name__ == "__main__":
    sys.exit(main())

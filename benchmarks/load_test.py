"""The app under hostile input and load, loopback only. Prints one JSON object.

    python benchmarks/load_test.py [--clients 8] [--requests 6] [--no-job] [--dataset data/synth160]

It starts ``app.py`` (the shipped checkpoints, as ``make demo`` does; ``PROFASHION_CHECKPOINTS`` and
``PROFASHION_CACHE`` are honoured, jobs go to a temporary folder), then:

1. ``attacks``: every hostile upload of issue 14 sent to ``/retrieve`` with all models: the answer (its
   first line), the seconds it took, the app's resident memory before and after and its peak, and whether
   the app still answers;
2. a fine-tuning job on ``--dataset`` (unless ``--no-job``), so the requests below share the machine with
   training as they would on a Space;
3. ``single``: one client, ``--requests`` Retrieves with every model (queries from the dataset's train split,
   not gallery items, so every request embeds its query);
4. ``concurrent``: ``--clients`` clients at once, ``--requests`` each: errors (and their messages), p50/p95
   latency, memory growth, and the ratio of its p95 to the single client's (the reference of the same run);
5. ``flood``: bursts of ``--flood`` (300) concurrent calls to the handlers outside the queue (the page's load with
   a link naming a kept 19 MB upload, the share link made from that upload, the gallery switch), each
   ``POST /gradio_api/run/predict`` as the second probe sent them, with one Retrieve sent among each burst
   (``--requests`` bursts; the flood's client runs in its own process at nice 19, as if on another machine): the
   Retrieves' p50 beside the p50 of the same Retrieves on the quiet app just before
   (``ratio_p50``; the promise is at most 2), how long a burst took, and how many calls were answered, refused as
   busy, or failed otherwise. ``--flood-only`` runs this section alone.

Bounded: at most ``clients x requests`` requests, each with a 300 s timeout, the flood at most ``--flood-seconds``,
and the job is stopped at the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from bench_app import free_port, pct, rss_mb, stop_app

REPO = Path(__file__).resolve().parents[1]
OWNER = "load-test-client-owner-0123456789"  # the benchmark's own job-owner token (the app serves no anonymous caller)


def attack_files(folder: Path) -> dict[str, Path]:
    """The hostile uploads of issue 14 (and a few more), written into ``folder``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    files = {}

    def save(name, img, **kw):
        files[name] = folder / name
        img.save(files[name], **kw)

    save("wide-100000x1.png", Image.fromarray((rng.random((1, 100_000, 3)) * 255).astype("uint8")))
    save("tall-1x100000.png", Image.fromarray((rng.random((100_000, 1, 3)) * 255).astype("uint8")))
    ramp = ((np.arange(7999, dtype=np.uint32)[None, :] * 7 + np.arange(7999)[:, None]) % 65536).astype(np.uint16)
    save("deep-7999x7999-16bit.png", Image.fromarray(ramp))
    save("deep-6000x6000-16bit.png", Image.fromarray(ramp[:6000, :6000].copy()))
    save("strip-3200x160.png", Image.fromarray((rng.random((160, 3200, 3)) * 255).astype("uint8")))
    save("rgba.png", Image.fromarray((rng.random((300, 200, 4)) * 255).astype("uint8"), "RGBA"))
    files["not-an-image.png"] = folder / "not-an-image.png"
    files["not-an-image.png"].write_bytes(b"#!/bin/sh\necho not an image\n" * 100)
    files["empty.jpg"] = folder / "empty.jpg"
    files["empty.jpg"].write_bytes(b"")
    files["truncated.png"] = folder / "truncated.png"
    files["truncated.png"].write_bytes(files["rgba.png"].read_bytes()[:400])
    return files


class RssSampler:
    """The largest resident memory of ``pid`` seen while the ``with`` block runs (sampled every 20 ms)."""

    def __init__(self, pid: int):
        self.pid, self.max_mb, self._stop = pid, 0.0, threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.max_mb = max(self.max_mb, rss_mb(self.pid)["rss"] or 0.0)
            self._stop.wait(0.02)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.max_mb = max(self.max_mb, rss_mb(self.pid)["rss"] or 0.0)


def alive(url: str) -> bool:
    """Whether the app itself answers (its ``/config``; app.py's starting page answers ``/`` before it)."""
    try:
        with urllib.request.urlopen(url + "config", timeout=30) as r:
            return r.status == 200
    except OSError:
        return False


def _post(url: str, body: dict, timeout: float = 60) -> int:
    """POST ``body`` as JSON; the HTTP status (0 when the connection failed)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace")
        return -exc.code if "busy" in body else exc.code  # negative: the app's own "busy" refusal
    except OSError:
        return 0


def _flooder(conn, bodies: list, callers: int) -> None:
    """The flood's client, in a process of its own at the lowest CPU priority (as if on another machine, which
    a visitor's flood is): on each "go", ``callers`` calls at once; answers their statuses counted."""
    os.nice(19)
    with concurrent.futures.ThreadPoolExecutor(callers) as pool:
        conn.send("ready")
        while conn.recv() == "go":
            counts = {}
            for status in pool.map(lambda k: _post(*bodies[k % len(bodies)]), range(callers)):
                counts[status] = counts.get(status, 0) + 1
            conn.send(counts)


def flood(url: str, config: dict, client, query: str, attribute: str, names: list[str], tmp: Path,
          callers: int, seconds: float, retrieves: int) -> dict:
    """Section 5: ``callers`` threads calling the handlers outside the queue while one client Retrieves."""
    from gradio_client import Client, handle_file
    from PIL import Image

    deps = {d.get("api_name"): d["id"] for d in config["dependencies"] if d.get("queue") is False}
    missing = [n for n in ("open_link", "make_link") if n not in deps]
    if missing:
        return {"error": f"no unqueued handler named {missing} in /config"}
    switch = next((d["id"] for d in config["dependencies"] if d.get("queue") is False and d.get("backend_fn")
                   and any(t[1] == "input" for t in d["targets"]) and len(d["inputs"]) == 1), None)
    # a 19 MB upload (noise does not compress), uploaded once and kept by the share link, as the probe did
    big = tmp / "upload-19mb.png"
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((2600, 2500, 3)) * 255).astype("uint8")).save(big, compress_level=0)
    sha = hashlib.sha256(big.read_bytes()).hexdigest()
    uploaded = client.upload_files([str(big)])[0] if hasattr(client, "upload_files") else None
    if uploaded is None:
        import httpx

        with open(big, "rb") as f:
            uploaded = httpx.post(url + "gradio_api/upload", files={"files": (big.name, f, "image/png")},
                                  timeout=120).json()[0]
    file_data = {"path": uploaded, "orig_name": big.name, "meta": {"_type": "gradio.FileData"}}
    gallery = next(c["props"]["value"] for c in config["components"] if c.get("props", {}).get("elem_id") == "gallery")
    make_link = {"fn_index": deps["make_link"], "data": [gallery, file_data, attribute, names, {"tab": "retrieve"}],
                 "session_hash": None}
    assert _post(url + "gradio_api/run/predict", make_link) in (200, -500), "the share link of the upload failed"
    bodies = [(url + f"gradio_api/run/predict?gallery={gallery}&upload={sha}&attribute={attribute}",
               {"fn_index": deps["open_link"], "data": [], "session_hash": None}),
              (url + "gradio_api/run/predict", make_link)]
    if switch is not None:
        bodies.append((url + "gradio_api/run/predict", {"fn_index": switch, "data": [gallery], "session_hash": None}))

    c = Client(url, verbose=False, download_files=False)

    def retrieve_ms(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            c.predict(handle_file(query), attribute, names, api_name="/retrieve")
            out.append(1000 * (time.perf_counter() - t))
        return out

    retrieve_ms(2)  # warm
    quiet = retrieve_ms(retrieves)
    counts, flooded, bursts = {}, [], []
    ctx = multiprocessing.get_context("fork")
    conn, child_conn = ctx.Pipe()
    flooder = ctx.Process(target=_flooder, args=(child_conn, bodies, callers), daemon=True)
    flooder.start()
    assert conn.recv() == "ready"
    t0 = time.perf_counter()
    try:
        for _ in range(retrieves):  # a burst of `callers` calls at once, and one Retrieve sent among them
            if time.perf_counter() - t0 > seconds:
                break
            b0 = time.perf_counter()
            conn.send("go")
            flooded += retrieve_ms(1)
            for status, n in conn.recv().items():
                counts[status] = counts.get(status, 0) + n
            bursts.append(time.perf_counter() - b0)
    finally:
        conn.send("stop")
        flooder.join(30)
    calls = sum(counts.values())
    out = {"callers": callers, "bursts": len(bursts), "burst_seconds": pct(bursts), "calls": calls,
           "answered": counts.get(200, 0), "refused_busy": sum(v for k, v in counts.items() if k < 0),
           "other": {str(k): v for k, v in counts.items() if k > 200 or k == 0},
           "retrieve_quiet_ms": pct(quiet), "retrieve_flood_ms": pct(flooded)}
    if quiet and flooded:
        out["ratio_p50"] = round(float(np.percentile(flooded, 50) / np.percentile(quiet, 50)), 2)
        out["within_2x"] = out["ratio_p50"] <= 2.0
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=6, help="Retrieve requests per client (default 6)")
    p.add_argument("--dataset", default="data/synth160", help="the job's dataset and the queries' source")
    p.add_argument("--no-job", action="store_true", help="no training job during the load")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--flood", type=int, default=300, help="concurrent callers of the unqueued handlers (0: none)")
    p.add_argument("--flood-seconds", type=float, default=120.0, help="the flood's longest duration")
    p.add_argument("--flood-only", action="store_true", help="run section 5 alone (no attacks, job or load)")
    args = p.parse_args()
    if not 1 <= args.clients <= 64 or not 1 <= args.requests <= 100:
        p.error("--clients must be 1..64 and --requests 1..100")

    from gradio_client import Client, handle_file

    from profashion.data.splits import load_dataset

    tmp = Path(tempfile.mkdtemp(prefix="load-test-"))
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
           "PROFASHION_JOBS": str(tmp / "jobs")}
    env.pop("SPACE_ID", None)
    port = args.port or free_port()
    env["PORT"] = str(port)
    url = f"http://127.0.0.1:{port}/"
    log = open(tmp / "app.log", "wb")
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py")], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    out: dict = {"cpus": os.cpu_count(), "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    job_id = None
    try:
        t0 = time.perf_counter()
        while proc.poll() is None and not alive(url) and time.perf_counter() - t0 < 1800:
            time.sleep(0.5)
        if proc.poll() is not None or not alive(url):
            print((tmp / "app.log").read_text()[-3000:], file=sys.stderr)
            return 1
        client = Client(url, verbose=False)
        config = json.loads(urllib.request.urlopen(url + "config", timeout=30).read())
        models = next(c["props"]["choices"] for c in config["components"]
                      if c.get("props", {}).get("elem_id") == "models")
        names = [c[1] if isinstance(c, (list, tuple)) else c for c in models]
        ds = load_dataset(REPO / args.dataset)
        attribute = ds.schema.names[0]
        queries = [str(ds.image_path("train", int(i))) for i in ds.split("train").labels[:400:9, 0]]
        client.predict(handle_file(queries[0]), attribute, names, api_name="/retrieve")  # warm-up
        # the app warms its plots in the background after its models are served: measure once it is done (the
        # reference is the quiet app, not one still projecting)
        t1 = time.perf_counter()
        while time.perf_counter() - t1 < 300 and (tmp / "app.log").read_text(errors="replace").count(
                "projections ready") < 2:  # one line per gallery, the app's two
            time.sleep(1)
        out["warm_wait_s"] = round(time.perf_counter() - t1, 1)
        out["models"] = names
        if args.flood_only:
            out["flood"] = flood(url, config, client, queries[1], attribute, names, tmp, args.flood,
                                 args.flood_seconds, args.requests)
            print(json.dumps(out, indent=2))
            return 0

        # 1. hostile uploads
        attacks = {}
        for name, path in attack_files(tmp).items():
            before = rss_mb(proc.pid)
            with RssSampler(proc.pid) as sampler:
                t = time.perf_counter()
                try:
                    client.predict(handle_file(str(path)), attribute, names, api_name="/retrieve")
                    answer = "accepted"
                except Exception as exc:  # noqa: BLE001 - the app's answer is what we record
                    answer = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                seconds = time.perf_counter() - t
            after = rss_mb(proc.pid)
            attacks[name] = {"answer": answer, "seconds": round(seconds, 2), "rss_before_mb": before["rss"],
                             "rss_after_mb": after["rss"], "rss_max_during_mb": sampler.max_mb,
                             "growth_mb": round(sampler.max_mb - before["rss"], 1), "alive": alive(url)}
        out["attacks"] = attacks

        # 2. a job training meanwhile
        if not args.no_job:
            rec = client.predict("asen", str(REPO / args.dataset), "demo", 2, 8192, 64, 1000, "", False, "",
                                 owner=OWNER, api_name="/launch_job")[1]
            job_id = rec["id"]
            out["job"] = {"id": job_id, "status": rec["status"]}

        def run(n: int, offset: int, lat: list, errors: list) -> None:
            c = Client(url, verbose=False, download_files=False)  # a browser fetches the images in parallel, lazily
            for i in range(n):
                t = time.perf_counter()
                try:
                    c.predict(handle_file(queries[(offset + i) % len(queries)]), attribute, names,
                              api_name="/retrieve")
                    lat.append(1000 * (time.perf_counter() - t))
                except Exception as exc:  # noqa: BLE001
                    errors.append(str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc))

        # 3. one client
        lat, errors = [], []
        run(args.requests, 0, lat, errors)
        out["single"] = {"retrieve_ms": pct(lat) if lat else None, "errors": errors}

        # 4. many clients
        before = rss_mb(proc.pid)
        lat_all, errors_all = [], []
        threads = [threading.Thread(target=run, args=(args.requests, 7 * k, lat_all, errors_all))
                   for k in range(args.clients)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=300 * args.requests)
        after = rss_mb(proc.pid)
        out["concurrent"] = {
            "clients": args.clients, "wall_s": round(time.perf_counter() - t, 1),
            "retrieve_ms": pct(lat_all) if lat_all else None, "errors": len(errors_all),
            "error_messages": sorted(set(errors_all))[:5],
            "rss_before_mb": before["rss"], "rss_after_mb": after["rss"], "peak_mb": after["peak"]}
        if lat and lat_all:
            out["p95_ratio"] = round(float(np.percentile(lat_all, 95) / np.percentile(lat, 95)), 2)
        # 5. the handlers outside the queue flooded (after the job is stopped: the reference is the quiet app)
        if job_id:
            out["job"]["status_at_end"] = client.predict(job_id, OWNER, api_name="/job_status")[0]["status"]
            client.predict(job_id, OWNER, api_name="/stop_job")
            job_id = None
        if args.flood:
            out["flood"] = flood(url, config, client, queries[1], attribute, names, tmp, args.flood,
                                 args.flood_seconds, args.requests)
        out["alive_at_end"] = alive(url)
        if job_id:
            out["job"]["status_at_end"] = client.predict(job_id, OWNER, api_name="/job_status")[0]["status"]
        out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(out, indent=2))
        return 0
    finally:
        if job_id:
            try:
                Client(url, verbose=False).predict(job_id, OWNER, api_name="/stop_job")
            except Exception:  # noqa: BLE001 - the app may be gone; the job dies with its process group below
                pass
        stop_app(proc, log)


if __name__ == "__main__":
    sys.exit(main())

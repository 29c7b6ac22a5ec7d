"""The pieces that make the app safe to host publicly, one by one (tests/test_space.py tries them together, as a
Space runs them): no server folder in what is sent, files served by content from Gradio's upload folder, a
browser-state key that survives restarts, Gradio's upload folder bounded, handlers outside the queue bounded,
share-link values parsed strictly and echoed as text, job refusals that confirm nothing."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("gradio")
import gradio as gr  # noqa: E402

from profashion.explorer.public import PublicFiles, browser_secret, public_text  # noqa: E402
from profashion.explorer.share import LinkState, escape_markdown, read_link  # noqa: E402
from profashion.ui import serving  # noqa: E402
from profashion.ui.common import BUSY, MAX_ERROR_CHARS, bounded, to_error  # noqa: E402
from profashion.ui.serving import bound_gradio_cache  # noqa: E402

# --- no server folder in a sentence -----------------------------------------------------------------------------


def test_public_text_names_roots_and_cuts_other_paths_to_their_last_part(tmp_path):
    cache = tmp_path / "home" / ".cache" / "profashion"
    text = (f"{tmp_path}/jobs/asen-1/run/best was trained on 2 attributes but {cache}/gallery-v2-s1 has 10; "
            "see /srv/app/checkpoints/csn/config.json, and/or 1/2 of https://example.org/a/b")
    out = public_text(text, [(cache, "<cache>")])
    assert out == ("best was trained on 2 attributes but <cache>/gallery-v2-s1 has 10; see config.json, and/or "
                   "1/2 of https://example.org/a/b")
    assert public_text("~/.cache/profashion/x.png is missing") == "x.png is missing"


def test_an_error_sent_to_a_visitor_names_no_folder_and_is_short():
    err = to_error(ValueError("/srv/cache/uploads/ab12.png is not an image we can read; use PNG"))
    assert err.message == "Ab12.png is not an image we can read; use PNG"
    long = to_error(ValueError("unknown attribute " + "x" * 10_000_000 + "; choose one of colour, texture"))
    assert len(long.message) <= MAX_ERROR_CHARS and " … " in long.message
    assert long.message.startswith("Unknown attribute xxx") and long.message.endswith("; choose one of colour, texture")


# --- files served by content --------------------------------------------------------------------------------


def test_a_served_file_is_mirrored_under_its_content_hash(tmp_path):
    import hashlib

    files = PublicFiles(tmp_path / "gradio" / "profashion")
    src = tmp_path / "cache" / "thumbs" / "3-hit.png"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"first picture")
    first = Path(files.path(src))
    assert first.parent == tmp_path / "gradio" / "profashion"
    assert first.name == hashlib.sha256(b"first picture").hexdigest() + ".png" and first.read_bytes() == b"first picture"
    url = files.url(src)
    assert url.startswith("gradio_api/file=") and str(src.parent) not in url and first.name in url
    st = src.stat()
    src.write_bytes(b"other picture")  # a changed file (even with its old times) gets a new name
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    second = Path(files.path(src))
    assert second.name == hashlib.sha256(b"other picture").hexdigest() + ".png" and second != first
    assert first.read_bytes() == b"first picture"  # a copy: a write in place to the source leaves it as it was
    hostile = tmp_path / "x.svg"
    hostile.write_text("<svg onload=alert(1)>")
    assert files.path(hostile).endswith(".bin")  # only image (and JSON) suffixes are kept


# --- the browser state's key -------------------------------------------------------------------------------------


def test_the_browser_state_key_is_made_once_kept_private_and_replaced_when_damaged(tmp_path):
    key = browser_secret(tmp_path)
    path = tmp_path / "browser-secret"
    assert len(key) == 64 and int(key, 16) >= 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert browser_secret(tmp_path) == key  # a restart reads the same key
    path.write_text("not a key!")
    fresh = browser_secret(tmp_path)
    assert fresh != key and len(fresh) == 64 and path.read_text().strip() == fresh
    # many apps starting at once on one cache agree on one key
    path.unlink()
    keys, barrier = [], threading.Barrier(8)

    def start():
        barrier.wait()
        keys.append(browser_secret(tmp_path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and path.read_text().strip() == keys[0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


# --- Gradio's upload folder bounded --------------------------------------------------------------------------------


def test_gradios_upload_folder_keeps_the_newest_files_within_the_bound(tmp_path):
    files = []
    for i in range(10):
        f = tmp_path / f"upload-{i}.png"
        f.write_bytes(b"x" * 1000)
        os.utime(f, (1_000_000 + i, 1_000_000 + i))
        files.append(str(f))
    default = str(tmp_path / "default.png")  # a component's own value stays, however old
    Path(default).write_bytes(b"y" * 5000)
    os.utime(default, (1, 1))
    uploads, outputs = set(files[:6]), set(files[6:]) | {default}
    blocks = SimpleNamespace(blocks={1: SimpleNamespace(keep_in_cache={default}), 2: SimpleNamespace()},
                             temp_file_sets=[uploads, outputs])
    removed = bound_gradio_cache(blocks, max_bytes=3500)
    assert removed == 7000
    assert sorted(Path(f).name for f in files if Path(f).exists()) == ["upload-7.png", "upload-8.png", "upload-9.png"]
    assert Path(default).exists() and default in outputs
    assert uploads == set() and outputs == {default, *files[7:]}
    assert bound_gradio_cache(blocks, max_bytes=3500) == 0


def test_the_app_sets_an_age_limit_and_a_size_bound_on_gradios_folder(monkeypatch):
    from profashion.ui import demo

    assert demo.DELETE_CACHE[0] <= 3600 and demo.DELETE_CACHE[1] <= 24 * 3600
    monkeypatch.setenv("PROFASHION_GRADIO_CACHE_MB", "64")
    assert serving.gradio_cache_bytes() == 64 << 20
    monkeypatch.setenv("PROFASHION_GRADIO_CACHE_MB", "lots")
    assert serving.gradio_cache_bytes() == serving.GRADIO_CACHE_BYTES


# --- handlers outside the queue bounded ------------------------------------------------------------------------


def test_a_handler_outside_the_queue_refuses_calls_beyond_its_limit_at_once():
    gate, entered = threading.Event(), threading.Semaphore(0)

    def slow(x):
        entered.release()
        gate.wait(10)
        return x

    event = bounded(slow, limit=2)
    results, threads = [], [threading.Thread(target=lambda: results.append(event(1))) for _ in range(2)]
    for t in threads:
        t.start()
    assert entered.acquire(timeout=10) and entered.acquire(timeout=10)
    t0 = time.monotonic()
    with pytest.raises(gr.Error) as err:
        event(3)
    assert time.monotonic() - t0 < 5 and err.value.message == BUSY[0].upper() + BUSY[1:]
    gate.set()
    for t in threads:
        t.join()
    assert results == [1, 1] and event(4) == 4  # the slots are given back
    quiet = bounded(lambda: slow(0), limit=1, busy=lambda: "skipped")
    gate.clear()
    worker = threading.Thread(target=quiet)
    worker.start()
    assert entered.acquire(timeout=10)
    assert quiet() == "skipped"  # an output that may lag says nothing
    gate.set()
    worker.join()


# --- share links ----------------------------------------------------------------------------------------------


class _Catalog:
    name, num_items, attributes, names = "synthetic", 60, ["colour", "texture"], ["asen", "csn"]

    def item_path(self, i):
        return f"/gallery/{i}.png"


class _Galleries:
    catalogs = {"synthetic": _Catalog()}
    default = catalogs["synthetic"]

    def get(self, name):
        return self.catalogs.get(name, self.default)


@pytest.mark.parametrize("item", ["²", "٣", "9" * 5000, "-1", "1e3", "0x10", "60", " 7 7"])
def test_an_item_that_is_not_plain_digits_in_range_is_ignored_with_the_note(item):
    state = read_link(_Galleries(), {"item": item}, None)
    assert state.query is None and len(state.ignored) == 1 and state.ignored[0].startswith("item ")
    assert len(state.note()) < 200


def test_a_valid_item_opens():
    assert read_link(_Galleries(), {"item": "59", "attribute": "texture"}, None).query == "/gallery/59.png"


def test_link_values_are_echoed_as_text_and_cut_short():
    state = read_link(_Galleries(), {"attribute": '<img src="http://127.0.0.1:9/t.png">'}, None)
    md = state.note_markdown()
    assert "<img" not in md and "&lt;img" in md
    state = read_link(_Galleries(), {"attribute": '<a href="https://evil.example/">LOG IN</a>'}, None)
    md = state.note_markdown()
    assert "<a" not in md and "https\\:" in md  # neither a tag nor an autolink
    huge = read_link(_Galleries(), {"attribute": "x" * 10_000_000, "models": ["not", "text"]}, None)
    assert len(huge.note_markdown()) < 300 and "too long" in huge.note()
    assert escape_markdown("[LOG IN](https://evil.example) ![x](y) *b* `c`") == (
        "\\[LOG IN\\]\\(https\\://evil\\.example\\) \\!\\[x\\]\\(y\\) \\*b\\* \\`c\\`")
    assert LinkState().note_markdown() == ""


# --- jobs: one sentence for unknown and foreign, nothing anonymous, publishing off with training ------------------


def _job(root: Path, job_id: str, owner: str | None, dataset: str) -> None:
    from profashion.explorer.jobs import owner_key

    d = root / job_id
    d.mkdir(parents=True)
    d.joinpath("job.json").write_text(json.dumps({
        "id": job_id, "model": "asen", "dataset": dataset, "preset": "demo", "status": "stopped",
        "reason": f"{root}/{job_id}/run/best was trained on 2 attributes", "pid": None,
        "created": "2026-01-01T00:00:00Z", "owner": owner_key(owner)}))


def test_another_browsers_job_and_an_unknown_id_get_the_same_sentence(tmp_path):
    from profashion.explorer.jobs import JobError, JobManager

    jobs = JobManager(tmp_path / "jobs", [tmp_path / "data"])
    _job(jobs.root, "asen-20260101-000000-beef", "a" * 32, str(tmp_path / "data" / "synth"))
    sentences = []
    for job_id in ("asen-20260101-000000-beef", "asen-20260101-000000-dead"):
        with pytest.raises(JobError) as err:
            jobs.job_for(job_id, "b" * 32)
        sentences.append(str(err.value).replace(job_id, "ID"))
    assert sentences[0] == sentences[1] and "of this browser" in sentences[0]


def test_the_fine_tune_form_tells_no_job_or_private_file_from_a_missing_one(tmp_path):
    """The cache is a data root (the generated galleries live there) and it holds jobs/, uploads/, exports/ and the
    browser key: the form's dataset check and a job config's pretrained path answered "not a dataset" or an
    estimate for another browser's existing job, "does not exist" for an unknown id (fourth hostile probe). They
    are refused as folders outside the data roots, alike whether they exist or not."""
    from profashion.explorer.jobs import JobError, JobManager, default_data_roots, private_folders
    from profashion.explorer.public import SECRET_NAME
    from profashion.ui import tab_finetune

    cache = tmp_path / "cache"
    jobs = JobManager(cache / "jobs", default_data_roots(cache), private=private_folders(cache))
    job = "asen-20260101-000000-beef"
    _job(jobs.root, job, "a" * 32, str(cache / "data" / "synth"))
    (cache / "uploads").mkdir()
    (cache / "uploads" / ("f" * 64 + ".img")).write_bytes(b"x")
    (cache / SECRET_NAME).write_text("k")
    (cache / "gallery").mkdir()  # a generated gallery in the cache stays usable
    (cache / "gallery" / "meta.json").write_text("{}")
    pairs = [(f"{job}", "asen-20260101-000000-dead"), (f"{job}/job.json", "asen-20260101-000000-dead/job.json")]
    for there, missing in pairs:
        for root in (str(cache / "jobs"), "<data root 1>/jobs"):
            said = []
            for name in (there, missing):
                with pytest.raises(JobError) as err:
                    jobs.resolve_dataset(f"{root}/{name}")
                said.append(str(err.value).replace(name, "NAME"))
                with pytest.raises(JobError) as err:
                    jobs._pretrained(f"{root}/{name}".rstrip("/") + ("" if name.endswith(".json") else "/w.safetensors"))
                said.append(str(err.value).replace(name, "NAME").replace("/w.safetensors", ""))
            assert said[0] == said[2] and said[1] == said[3] and "outside the allowed data roots" in said[0], said
    for private in (cache / "uploads" / ("f" * 64 + ".img"), cache / SECRET_NAME, cache / "exports"):
        with pytest.raises(JobError, match="outside the allowed data roots"):
            jobs.resolve_dataset(str(private))
    assert jobs.resolve_dataset(str(cache / "gallery")) == (cache / "gallery").resolve()
    # the time estimate's refusal names the caller's path as given, never the server folder it resolves to
    for name in (jobs.public(str(cache / "jobs" / job / "w.safetensors")), str(cache / "exports" / "w.safetensors"),
                 "~/w.safetensors", jobs.public(str(cache / "gallery")) + "/../../w.safetensors"):
        text = tab_finetune.estimate(jobs, "asen", str(cache / "gallery"), "demo", 1, 64, 8, 0,
                                     json.dumps({"pretrained": name}), None)
        assert "would be refused" in text and "pretrained weights path" in text, text
        assert str(cache) not in text and str(tmp_path) not in text and os.path.expanduser("~") not in text, text
    # another account's home: the same sentence whether the account exists or not (expanduser raised for an
    # unknown one: sixth hostile probe)
    said = []
    for name in ("~root/w.safetensors", "~nosuchaccount9/w.safetensors"):
        with pytest.raises(JobError) as err:
            jobs._pretrained(name)
        said.append(str(err.value).replace(name, "NAME"))
        with pytest.raises(JobError) as err:
            jobs.resolve_dataset(name.removesuffix("/w.safetensors"))
        said.append(str(err.value).replace(name.removesuffix("/w.safetensors"), "NAME"))
    assert said[0] == said[2] and said[1] == said[3] and "outside the allowed data roots" in said[0], said
    # the form's dataset event says the same through the page
    said = []
    for n in (job, "asen-20260101-000000-dead"):
        with pytest.raises(JobError) as err:
            tab_finetune.on_dataset(jobs, f"{cache}/jobs/{n}")
        said.append(str(err.value).replace(n, "NAME"))
    assert said[0] == said[1], said


def test_list_jobs_names_datasets_and_reasons_by_public_names(tmp_path, monkeypatch):
    from profashion.explorer.jobs import JobManager
    from profashion.ui import tab_finetune

    monkeypatch.setenv("SPACE_ID", "someone/explorer")
    jobs = JobManager(tmp_path / "jobs", [tmp_path / "app" / "data"], home=tmp_path / "app")
    _job(jobs.root, "asen-20260101-000000-beef", "a" * 32, str(tmp_path / "app" / "data" / "synth"))
    listed = tab_finetune.list_jobs(jobs, "a" * 32)
    assert listed[0]["dataset"] == "<data root 1>/synth"
    assert listed[0]["reason"] == "<jobs>/asen-20260101-000000-beef/run/best was trained on 2 attributes"
    assert str(tmp_path) not in json.dumps(listed)
    assert tab_finetune.has_owner("a" * 32) and not tab_finetune.has_owner(None)
    assert not tab_finetune.has_owner("short") and not tab_finetune.has_owner("a" * 31 + "/")


def test_publishing_is_off_where_training_is(tmp_path):
    from profashion.explorer.jobs import PUBLISH_OFF, JobError, JobManager

    jobs = JobManager(tmp_path / "jobs", [tmp_path], enabled=False)
    _job(jobs.root, "asen-20260101-000000-beef", None, str(tmp_path))
    with pytest.raises(JobError) as err:
        jobs.publish("asen-20260101-000000-beef", None)
    assert str(err.value) == PUBLISH_OFF


def test_the_app_leaves_pillow_only_the_allowed_decoders(tmp_path, monkeypatch):
    """Gradio opens an image upload with Pillow itself, before any handler: once the app is built, an EPS (which
    would run Ghostscript) is opened by no one, and the allowed formats still are."""
    import PIL.EpsImagePlugin
    from PIL import Image, UnidentifiedImageError

    from profashion.data.images import IMAGE_FORMATS, ImageError, load_image, restrict_pillow

    def ghostscript(*a, **k):
        raise AssertionError("Ghostscript was called")

    monkeypatch.setattr(PIL.EpsImagePlugin, "Ghostscript", ghostscript)
    eps = tmp_path / "upload.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\nshowpage\n")
    restrict_pillow()
    restrict_pillow()  # idempotent
    assert set(IMAGE_FORMATS) <= set(Image.ID) <= {*IMAGE_FORMATS, "MPO"} and set(Image.OPEN) == set(Image.ID)
    with pytest.raises(UnidentifiedImageError):
        Image.open(eps)  # as Gradio's preprocessing opens an upload
    with pytest.raises(ImageError, match="is an EPS image; use PNG, JPEG"):
        load_image(str(eps))  # the app still names what it refused
    for fmt in ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"):
        path = tmp_path / f"ok.{fmt.lower()}"
        Image.new("RGB", (8, 6), (10, 20, 30)).save(path, format=fmt)
        with Image.open(path) as im:
            assert im.format == fmt and im.size == (8, 6)


def test_a_job_model_config_nested_too_deep_or_too_large_is_one_sentence(tmp_path):
    from profashion.explorer.jobs import JobError, JobManager

    jobs = JobManager(tmp_path / "jobs", [tmp_path])
    with pytest.raises(JobError, match="^the model config nests arrays or objects more than 32 levels deep"):
        jobs._model_config("[" * 20_000 + "]" * 20_000)  # json.loads: RecursionError
    with pytest.raises(JobError, match="^the model config is larger than 64 KB"):
        jobs._model_config('{"embed_dim": ' + " " * 70_000 + "32}")
    assert jobs._model_config('{"embed_dim": 32}') == {"embed_dim": 32}


def test_the_mirror_serves_uploads_in_place_and_is_trimmed_oldest_unused_first(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    files = PublicFiles(tmp_path / "gradio" / "profashion")
    upload = tmp_path / "gradio" / "abc123" / "mine.png"  # a visitor's upload, in Gradio's folder already
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"u" * 10)
    assert files.path(upload) == str(upload) and not files.root.exists()
    mirrors = []
    for i in range(4):
        src = tmp_path / "gallery" / f"{i}.png"
        src.parent.mkdir(exist_ok=True)
        src.write_bytes(bytes([i]) * 1000)
        mirrors.append(Path(files.path(src)))
        os.utime(mirrors[-1], (1000 + i, 1000 + i))
    files.path(tmp_path / "gallery" / "0.png")  # served again: used now, so kept
    assert files.trim(2500) == 2000
    assert [m.exists() for m in mirrors] == [True, False, False, True]
    again = Path(files.path(tmp_path / "gallery" / "1.png"))  # a trimmed mirror is made again when served
    assert again == mirrors[1] and again.read_bytes() == bytes([1]) * 1000


def test_direct_calls_beyond_the_limit_are_refused_before_the_app_sees_them():
    """The middleware in front of ``/gradio_api/run/``: ``limit`` calls in flight, one more answered 429 at once
    (the app never sees it); other routes (the queue, files, the page) pass whatever is in flight."""
    import asyncio

    from profashion.ui.serving import DirectCallLimit

    async def scenario():
        release, seen = asyncio.Event(), []

        async def app(scope, receive, send):
            seen.append(scope["path"])
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        limit = DirectCallLimit(app, limit=2)

        async def call(path, method="POST"):
            sent = []

            async def send(message):
                sent.append(message)

            await limit({"type": "http", "method": method, "path": path}, None, send)
            return sent[0]["status"]

        held = [asyncio.create_task(call("/gradio_api/run/predict")) for _ in range(2)]
        await asyncio.sleep(0.05)
        refused = await asyncio.wait_for(call("/gradio_api/run/predict"), 5)  # answered without waiting
        passing = asyncio.create_task(call("/gradio_api/queue/join"))
        page = asyncio.create_task(call("/gradio_api/run/predict", method="GET"))
        await asyncio.sleep(0.05)
        release.set()
        statuses = [await t for t in held] + [await passing, await page]
        assert limit.in_flight == 0
        return refused, statuses, seen

    refused, statuses, seen = asyncio.run(scenario())
    assert refused == 429 and statuses == [200, 200, 200, 200]
    assert seen.count("/gradio_api/run/predict") == 3 and "/gradio_api/queue/join" in seen


def test_each_clients_direct_calls_are_a_burst_then_a_few_a_second(monkeypatch):
    """One address flooding the unqueued handlers gets ``burst`` calls, then ``rate`` a second; another address is
    served meanwhile. Behind a Space's proxy the address is the last X-Forwarded-For entry (the earlier ones are the
    caller's to forge); elsewhere a forged header changes nothing. The clients remembered are bounded."""
    import asyncio

    from profashion.ui.serving import PEER_SHARE, DirectCallLimit, client_key

    now = [0.0]

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})

    limit = DirectCallLimit(app, limit=100, burst=3, rate=2.0, clients=4, clock=lambda: now[0])

    def call(ip, forwarded=None):
        sent = []

        async def send(message):
            sent.append(message)

        headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
        scope = {"type": "http", "method": "POST", "path": "/gradio_api/run/predict", "client": (ip, 5000),
                 "headers": headers}
        asyncio.run(limit(scope, None, send))
        return sent[0]["status"]

    monkeypatch.delenv("SPACE_ID", raising=False)
    assert [call("10.0.0.1") for _ in range(5)] == [200, 200, 200, 429, 429]
    assert call("10.0.0.2") == 200  # another client is served meanwhile
    now[0] = 0.5  # one token back (2 a second)
    assert [call("10.0.0.1") for _ in range(2)] == [200, 429]
    assert call("10.0.0.1", forwarded="1.2.3.4") == 429  # off a Space the header is not trusted
    now[0] = 100.0  # a long pause refills the burst, no more
    assert [call("10.0.0.1") for _ in range(4)] == [200, 200, 200, 429]

    monkeypatch.setenv("SPACE_ID", "someone/profashion")
    proxy = "10.9.9.9"  # every visitor comes through the Space's proxy
    assert [call(proxy, "6.6.6.6") for _ in range(4)] == [200, 200, 200, 429]
    assert call(proxy, "7.7.7.7") == 200  # another visitor behind the same proxy
    assert call(proxy, "1.1.1.1, 6.6.6.6") == 429  # a forged first entry: still 6.6.6.6
    assert client_key({"headers": [(b"x-forwarded-for", b" , 8.8.8.8 ")], "client": (proxy, 1)}) == "8.8.8.8"
    assert client_key({"headers": [], "client": (proxy, 1)}) == proxy
    # a caller forging a new X-Forwarded-For each call (nothing in front setting it): its peer's bucket, PEER_SHARE
    # times a client's, still bounds it (second hostile probe: 166 of 166 forged calls had passed)
    now[0] = 200.0
    forged = [call("10.7.7.7", f"9.9.{i // 250}.{i % 250}") for i in range(40)]
    assert forged.count(200) == 3 * PEER_SHARE and forged[-1] == 429
    for i in range(50):  # a spray of addresses: memory stays bounded
        call(proxy, f"5.5.5.{i}")
    assert len(limit.buckets) == 4


def test_an_events_request_over_the_bound_is_refused_before_gradio_reads_it():
    """A 1 MB gallery name came back as a 1 MB error (Gradio's own check of the choices echoes the value): an
    event's inputs are at most MAX_EVENT_BODY bytes, declared or sent in chunks; uploads have their own route."""
    import asyncio

    from profashion.ui.serving import MAX_EVENT_BODY, DirectCallLimit

    async def scenario():
        seen = []

        async def app(scope, receive, send):
            got = b""
            while True:
                m = await receive()
                if m["type"] == "http.disconnect":
                    seen.append(("cut", len(got)))
                    return
                got += m.get("body", b"")
                if not m.get("more_body"):
                    break
            seen.append(("read", len(got)))
            await send({"type": "http.response.start", "status": 200, "headers": []})

        limit = DirectCallLimit(app, limit=100, burst=100)

        async def call(path, size, declared=True, chunk=64 * 1024):
            sent = []

            async def send(message):
                sent.append(message)

            body = b"x" * size
            chunks = [body[i:i + chunk] for i in range(0, size, chunk)] or [b""]

            async def receive():
                part = chunks.pop(0) if chunks else b""
                return {"type": "http.request", "body": part, "more_body": bool(chunks)}

            headers = [(b"content-length", str(size).encode())] if declared else []
            await limit({"type": "http", "method": "POST", "path": path, "headers": headers,
                         "client": ("1.2.3.4", 1)}, receive, send)
            return sent[0]["status"] if sent else None

        out = [await call("/gradio_api/queue/join", 1000), await call("/gradio_api/queue/join", MAX_EVENT_BODY + 1),
               await call("/gradio_api/run/predict", 2 * MAX_EVENT_BODY), await call("/gradio_api/upload", 2 * MAX_EVENT_BODY),
               await call("/gradio_api/queue/join", 2 * MAX_EVENT_BODY, declared=False)]
        return out, seen

    statuses, seen = asyncio.run(scenario())
    assert statuses[:4] == [200, 413, 413, 200]  # the upload route keeps Gradio's own file-size bound
    assert statuses[4] is None and seen[-1][0] == "cut" and seen[-1][1] <= MAX_EVENT_BODY + 64 * 1024

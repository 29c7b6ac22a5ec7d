"""The app as a Hugging Face Space runs it, tried as a visitor (Chromium) and as a hostile API client.

A Space runs ``app.py`` from its own folder with ``SPACE_ID`` set, its cache in ``~/.cache/profashion`` (outside both
the temp dir and the working dir) and Gradio's upload folder wherever ``GRADIO_TEMP_DIR`` says. This module starts
``app.main`` in a subprocess laid out the same way: a home folder of its own outside pytest's temp dir, the cache
in it, ``GRADIO_TEMP_DIR`` beside it, the repository as the working dir, and checks that

- each flow works there: a case exported, an upload link and a share link opened, Results and Embeddings opened
  (the first probe found exports and upload links broken in this layout only);
- nothing the app sends names a server folder: the page, ``/config``, ``/gradio_api/info`` and every named
  endpoint's outputs and errors on good and bad input are searched for the cache, the home, the repository, the
  checkpoints, the jobs folder, the temp dir and pytest's temp dir. Gradio's upload folder is the one folder its
  file URLs name (``gradio_api/file=<folder>/<sha256>/<name>``, every Gradio app's): it holds only copies of what is
  served, under content hashes, so it is allowed (SECURITY.md says so);
- hostile link values are shown as escaped text, cut short, and never break the page;
- a browser's job-owner token is the same after the app restarts (the key its state is encrypted with is kept);
- on a public Space training and publishing are off, and an anonymous caller sees no job.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import pytest
from conftest import CACHE_ENV, playwright_sync_api, save_app_checkpoints

pytest.importorskip("gradio")
sync_api = playwright_sync_api()  # without a browser: failed under CI, skipped elsewhere
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "test-output" / "screenshots"
T = 90_000  # ms
START_TIMEOUT = 600  # s: the app builds its gallery and two indexes on a shared 2-core machine

LAUNCHER = """
import sys
from pathlib import Path

sys.path.insert(0, {repo!r})
import app
from profashion.explorer.catalog import GallerySpec
from profashion.explorer.galleries import GalleryDef

gallery = GallerySpec(n_train=0, n_valid=8, n_test=60, size=48, seed=1)
sys.exit(app.main([GalleryDef("synthetic", "Synthetic garments", "drawn garments", gallery, Path({ck!r}))],
                  max_points=60))
"""


def _space_base() -> Path:
    """A folder for the Space's home outside the temp dir, pytest's temp dir and the repository: /var/tmp where it
    is writable (it is on Debian), else beside the repository."""
    tmp = Path(tempfile.gettempdir()).resolve()
    for parent in (Path("/var/tmp"), REPO.parent):
        p = parent.resolve()
        if os.access(p, os.W_OK) and not p.is_relative_to(tmp) and not p.is_relative_to(REPO):
            return Path(tempfile.mkdtemp(prefix="profashion-space-test-", dir=p))
    pytest.fail("no writable folder outside the temp dir and the repository for the Space's home "
                "(/var/tmp or the repository's parent)")


def _png(path: Path, w: int = 40, h: int = 56, seed: int = 7) -> Path:
    """A small RGB PNG written by hand (no library under test involved)."""
    rows = b"".join(b"\x00" + bytes(v for x in range(w) for v in ((x * seed + y * 3) % 256, (y * 5) % 256,
                                                                  (x + y) % 256)) for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


class Space:
    """``app.main`` in a subprocess, laid out as on a Space; :meth:`restart` keeps its home (its cache)."""

    def __init__(self, base: Path):
        self.base = base
        self.home = base / "home"
        self.cache = self.home / ".cache" / "profashion"
        self.gradio = base / "gradio"
        self.ck = base / "checkpoints"
        self.launcher = base / "launch_space.py"
        self.log = base / "app.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.home.mkdir(parents=True)
        save_app_checkpoints(self.ck, ["asen", "csn"])
        self._mismatched_checkpoint(self.ck / "two-attrs")  # its reason names two folders (probe item 5a)
        self.launcher.write_text(LAUNCHER.format(repo=str(REPO), ck=str(self.ck)))

    @staticmethod
    def _mismatched_checkpoint(path: Path) -> None:
        import torch

        from profashion.models.base import build_model, save_checkpoint

        torch.manual_seed(0)
        save_checkpoint(build_model("asen", "demo", [3, 4], image_size=48, resize=48), path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in CACHE_ENV and k not in ("PROFASHION_JOBS",
                                                                                      "PROFASHION_TRAINING")}
        if not self.port:  # one port for the app's life: a restart keeps its origin (and a browser's storage)
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        return env | {"SPACE_ID": "profashion-tests/explorer", "HOME": str(self.home),
                      "XDG_CACHE_HOME": str(self.home / ".cache"), "PROFASHION_CACHE": str(self.cache),
                      "GRADIO_TEMP_DIR": str(self.gradio), "PORT": str(self.port), "HF_HUB_OFFLINE": "1",
                      "GRADIO_ANALYTICS_ENABLED": "False"}

    def start(self) -> None:
        env = self.env()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, str(self.launcher)], cwd=REPO, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the app exited ({self.proc.returncode}) before serving:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "config", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(1)
        pytest.fail(f"the app did not serve within {START_TIMEOUT} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def roots(self, basetemp: Path) -> dict[str, Path]:
        """The server folders no visitor may see named."""
        return {"the cache": self.cache, "the home": self.home, "the checkpoints": self.ck,
                "the jobs folder": self.cache / "jobs", "the launcher": self.launcher, "the repository": REPO,
                "the shared data": REPO.parent / "shared", "the temp dir": Path(tempfile.gettempdir()),
                "pytest's temp dir": basetemp}


def leaks(text: str, roots: dict[str, Path]) -> list[str]:
    """Each place in ``text`` that names one of ``roots`` (as given or resolved, as a whole path part) or a relative
    server path into the shared data, with what it names."""
    found = []
    for what, root in roots.items():
        for form in {str(root), str(root.resolve())}:
            for m in re.finditer(r"(?<![\w.~-])" + re.escape(form) + r"(?![\w.-])", text):
                found.append(f"{what}: ...{text[max(0, m.start() - 40):m.end() + 60]}...")
    for rel in ("../shared", "shared/data"):
        found += [f"a relative path: ...{text[max(0, i - 40):i + 60]}..." for i in _find_all(text, rel)]
    return found


def _find_all(text: str, needle: str):
    i = text.find(needle)
    while i >= 0:
        yield i
        i = text.find(needle, i + 1)


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    base = _space_base()
    app = Space(base)
    try:
        app.start()
        yield app
    finally:
        app.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def roots(space, tmp_path_factory):
    return space.roots(tmp_path_factory.getbasetemp())


@pytest.fixture
def context(browser, request):
    contexts = []

    def opener(viewport=(1400, 1000)):
        ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        contexts.append(ctx)
        return ctx

    yield opener
    SHOTS.mkdir(parents=True, exist_ok=True)
    for i, ctx in enumerate(contexts):
        for j, pg in enumerate(ctx.pages):
            try:
                pg.screenshot(path=str(SHOTS / f"space-{request.node.name.removeprefix('test_')}-{i}{j}.png"))
            except sync_api.Error:
                pass
        ctx.close()


def _open(ctx, url: str, tab: str = "Retrieve"):
    """A new page of ``url``, once it shows its ``tab`` (on Retrieve: once both models' rows are there)."""
    pg = ctx.new_page()
    pg.set_default_timeout(T)
    pg.goto(url)
    sync_api.expect(pg.get_by_role("tab", name=tab)).to_have_attribute("aria-selected", "true", timeout=T)
    if tab == "Retrieve":
        sync_api.expect(pg.get_by_role("button", name="Retrieve", exact=True)).to_be_visible(timeout=T)
        sync_api.expect(pg.locator("#retrieve-grid .pf-row")).to_have_count(2, timeout=T)
    return pg


def _no_error_shown(pg) -> None:
    """No output shows Gradio's bare "Error" and no error toast is open."""
    errors = pg.locator(".error, [data-testid='toast-body']").all_inner_texts()
    assert not [e for e in errors if e.strip()], errors
    sync_api.expect(pg.get_by_text("Error", exact=True)).to_have_count(0)


def _share_link(pg, pattern: str = r"gallery=") -> str:
    """The share link once it matches ``pattern`` (it follows the page's state a moment after a change)."""
    acc = pg.locator("#share")
    if not pg.locator("#share-link textarea").is_visible():
        acc.get_by_text("Share this case").click()
    box = pg.locator("#share-link textarea")
    sync_api.expect(box).to_have_value(re.compile(pattern), timeout=T)
    return box.input_value()


# --------------------------------------------------------------------------------------------------------------
# What the app sends


def test_page_config_and_api_info_name_no_server_folder(space, roots):
    for path in ("", "config", "gradio_api/info", "gradio_api/info?all_endpoints=true",
                 "?gallery=synthetic&attribute=colour&tab=results"):
        with urllib.request.urlopen(space.url + path, timeout=60) as r:
            text = r.read().decode("utf-8", "replace")
        assert text and not leaks(text, roots), (path, leaks(text, roots)[:5])
    # the check itself finds a folder where one is named (the cache's path, as the first probe saw it)
    assert leaks(json.dumps({"value": str(space.cache / "exports" / "x.png")}), roots)


def _call(client: Client, api: str, *args):
    """The endpoint's result, or its error's message (an AppError is the app's own one-sentence refusal)."""
    try:
        return client.predict(*args, api_name=api)
    except AppError as exc:
        return f"AppError: {exc}"
    except Exception as exc:  # noqa: BLE001 (Gradio refusing an input before the handler: its message is checked too)
        return f"{type(exc).__name__}: {exc}"


def test_every_endpoint_on_good_and_bad_input_names_no_server_folder(space, roots, tmp_path):
    client = Client(space.url, verbose=False, download_files=False)
    good = handle_file(str(_png(tmp_path / "query.png")))
    text_file = tmp_path / "holiday.png"
    text_file.write_text("this is a text file, not a picture")
    bad = handle_file(str(text_file))
    token = "t" * 32  # an API client's own owner token
    # a server file named as the query (no Gradio "meta"): an image in the home, and a path that does not exist
    private = {"path": str(_png(space.home / "private.png"))}
    missing = {"path": str(space.home / "missing.png")}
    calls = {
        "/retrieve": [(good, "colour", ["asen", "csn"], "synthetic"), (bad, "colour", ["asen"], "synthetic"),
                      (good, "wingspan", ["ghost"], "atlantis"), (private, "colour", ["asen"], "synthetic"),
                      (missing, "colour", ["asen"], "synthetic")],
        "/explore": [(good, "colour", ["asen", "csn"], "synthetic"), (bad, "texture", ["csn"], "synthetic"),
                     (private, "colour", ["csn"], "synthetic"), (missing, "colour", ["csn"], "synthetic")],
        "/export": [(good, "colour", ["asen", "csn"], "synthetic"), (bad, "colour", ["asen"], "synthetic"),
                    (private, "colour", ["csn"], "synthetic"), (missing, "colour", ["csn"], "synthetic")],
        "/embeddings": [("asen", "csn", "colour", "tsne", "synthetic"), ("asen", "ghost", "colour", "x", "synthetic")],
        "/neighbours": [("asen", "csn", "colour", "tsne", 4, "synthetic"), ("asen", "csn", "colour", 10**12, "z")],
        "/results": [("synthetic",), ("../../etc",)],
        "/galleries": [()],
        "/launch_job": [("asen", "<data root 3>/x", "demo", 1, 64, 8, 0, [], False, "", None, None, token)],
        "/job_status": [("asen-20260101-000000-0bad", token), ("../../etc/passwd", None)],
        "/stop_job": [("asen-20260101-000000-0bad", token)],
        "/resume_job": [("asen-20260101-000000-0bad", None)],
        "/list_jobs": [(token,), (None,)],
        "/publish_job": [("asen-20260101-000000-0bad", token)],
    }
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(calls) == set(info), "every named endpoint is tried: update this list with the app's endpoints"
    answers = {}
    for api, argsets in calls.items():
        for args in argsets:
            out = _call(client, api, *args)
            text = json.dumps(out, default=str)
            assert not leaks(text, roots), (api, leaks(text, roots)[:3])
            answers.setdefault(api, []).append(text)
    # the good calls answered with results, the bad ones with a sentence (never a bare "Error")
    assert "ASEN" in answers["/retrieve"][0] and not answers["/retrieve"][0].startswith('"AppError')
    assert "not an image we can read" in answers["/retrieve"][1]
    # a server file is no query: one sentence, the same whether it exists or not, for every endpoint reading one
    refused = {t for api in ("/retrieve", "/explore", "/export") for t in answers[api][-2:]}
    assert len(refused) == 1 and "not an image this app was given" in refused.pop()
    exported = answers["/export"][0]
    assert ".png" in exported and ".json" in exported and "AppError" not in exported, exported
    for api, texts in answers.items():
        for text in texts:
            assert not re.fullmatch(r'"(AppError: )?Error"', text), (api, text)
    # on a public Space training and publishing are off, and an anonymous caller sees no job
    assert "training is off" in answers["/launch_job"][0].lower(), answers["/launch_job"][0]
    assert "publishing is off" in answers["/publish_job"][0].lower(), answers["/publish_job"][0]
    assert json.loads(answers["/list_jobs"][1]) in ([], {"choices": []}) or "[]" in answers["/list_jobs"][1]


def _raw_call(url: str, api: str, data: list) -> tuple[str, object]:
    """``POST /gradio_api/call/<api>`` with ``data`` as sent (no client-side handling), then its event stream: the
    last event's name and data."""
    body = json.dumps({"data": data}).encode()
    req = urllib.request.Request(f"{url}gradio_api/call/{api}", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        event_id = json.loads(r.read())["event_id"]
    event, out = None, None
    with urllib.request.urlopen(f"{url}gradio_api/call/{api}/{event_id}", timeout=120) as r:
        for raw in r:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                out = json.loads(line[5:])
                break
    if event == "error" and isinstance(out, dict):  # the error's fields: its message is what a caller reads
        out = out.get("error")
    return event, out


def _direct_call(url: str, fn_index: int, data: list) -> tuple[str, object]:
    """An unqueued event called as the page calls it (``POST /gradio_api/run/predict``): ("complete", its data) or
    ("error", its message)."""
    body = json.dumps({"fn_index": fn_index, "data": data, "session_hash": "probe"}).encode()
    req = urllib.request.Request(f"{url}gradio_api/run/predict", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return "complete", json.loads(r.read())["data"]
    except urllib.error.HTTPError as exc:
        return "error", json.loads(exc.read()).get("error")


def test_values_gradio_refuses_before_our_handlers_are_one_sentence_of_ours(space, roots):
    """Gradio checks some inputs itself before the app's handler runs: its choice check echoed a refused value whole
    and its file check answered a bare "Error" (second probe, B3-B4). Each is now one sentence that names the input
    and says what to send, the same shape for every kind."""
    huge = "<img src=x onerror=alert(1)>" + "j" * 100_000
    cases = {
        "a server file sent as Gradio's own upload": (
            "retrieve", [{"path": "/etc/hosts", "meta": {"_type": "gradio.FileData"}}, "colour", ["asen"],
                         "synthetic"], None),
        "a missing file sent as Gradio's own upload": (
            "explore", [{"path": str(space.home / "nothing.png"), "meta": {"_type": "gradio.FileData"}}, "colour",
                        ["csn"], "synthetic"], None),
        "too few inputs": ("stop_job", [], None),
    }
    # the page's own (private) events take a raw call too: the gallery switch, called as the page calls it
    config = json.loads(urllib.request.urlopen(space.url + "config", timeout=60).read())
    fn = {d.get("api_name"): d["id"] for d in config["dependencies"]}
    cases["a gallery that is no choice"] = (fn["gallery_switch"], [huge], "Gallery")
    sentences = {}
    for what, (api, data, label) in cases.items():
        event, out = _raw_call(space.url, api, data) if isinstance(api, str) else _direct_call(space.url, api, data)
        assert event == "error" and isinstance(out, str), (what, event, str(out)[:300])
        assert len(out) <= 400 and "jjjj" not in out and "<img" not in out, (what, out[:300])
        assert not leaks(out, roots) and "/etc/hosts" not in out, (what, out)
        assert out.endswith("(each input's kind and choices are listed in the app's API page)."), (what, out)
        if label:
            assert f"“{label}”" in out, (what, out)
        sentences[what] = out
    assert "not one of its choices" in sentences["a gallery that is no choice"]
    assert "not uploaded to this app" in sentences["a server file sent as Gradio's own upload"]
    # a file that exists and one that does not get the same sentence
    assert sentences["a server file sent as Gradio's own upload"] == sentences[
        "a missing file sent as Gradio's own upload"]


def test_values_of_the_wrong_type_are_one_sentence_on_public_and_private_events(space, roots, tmp_path):
    """A list where a name goes, a number where a list goes, an item that is no number: they pass Gradio's checks
    (the events take their values as sent) and then made a handler raise, answered as a bare "Error" or Python's
    own words, echoing the value (third hostile probe, B1-B3). Each is one sentence of the app's."""
    q = {"path": json.loads(_upload(space.url, _png(tmp_path / "q.png")))[0], "meta": {"_type": "gradio.FileData"}}
    echo = "<img src=x>" + "A" * 500
    cases = [("results", [["synthetic"]]), ("results", [{"a": 1}]),
             ("retrieve", [q, "colour", ["asen"], ["synthetic"]]), ("retrieve", [q, "colour", 5, "synthetic"]),
             ("explore", [q, "colour", True, "synthetic"]), ("export", [q, "colour", ["asen"], {"g": 1}]),
             ("embeddings", [["asen"], "csn", "colour", "tsne", "synthetic"]),
             ("embeddings", ["asen", "csn", "colour", "tsne", ["synthetic"]]),
             ("neighbours", ["asen", "csn", "colour", echo, "synthetic"]),
             ("neighbours", ["asen", "csn", "colour", [1], "synthetic"]),
             ("neighbours", [["asen"], "csn", "colour", 4, "synthetic"]),
             ("neighbours", ["asen", "csn", "colour", 4, {"g": 1}])]
    answers = {}
    for api, data in cases:
        event, out = _raw_call(space.url, api, data)
        assert event == "error" and isinstance(out, str) and out.strip() not in ("", "Error"), (api, data, out)
        assert len(out) <= 400 and "<img" not in out and "AAAA" not in out, (api, out)
        assert not re.search(r"unhashable|invalid literal|argument must be|not iterable", out, re.I), (api, out)
        assert not leaks(out, roots), (api, out)
        answers.setdefault(api, []).append(out)
    assert "gallery item id" in answers["neighbours"][0] and "list of model names" in answers["retrieve"][1]
    assert "given by its name" in answers["results"][0]
    # a private event, called as the page calls it (unqueued): a number where the models go
    config = json.loads(urllib.request.urlopen(space.url + "config", timeout=60).read())
    fn = {d.get("api_name"): d["id"] for d in config["dependencies"]}
    width = len(next(d for d in config["dependencies"] if d["id"] == fn["mark_stale"])["inputs"])
    data = [None, None, "colour", 7, "synthetic", "asen", "csn", "tsne"][:width]
    event, out = _direct_call(space.url, fn["mark_stale"], data + [None] * (width - len(data)))
    assert event == "error" and isinstance(out, str) and "could not be answered" in out, out


def _upload(url: str, path: Path) -> str:
    """``POST /gradio_api/upload`` of one file, as the page sends it: the server's answer (a JSON list)."""
    boundary = "pfprobe"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{url}gradio_api/upload", body,
                                 {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read().decode()


# --------------------------------------------------------------------------------------------------------------
# The flows, in Chromium


def test_export_upload_link_share_link_results_and_embeddings_work(space, roots, context, tmp_path):
    expect = sync_api.expect
    pg = _open(context(), space.url)
    sent = []
    pg.on("response", lambda r: sent.append(r) if "/gradio_api/file=" in r.url else None)
    # an export: a PNG and a JSON, each downloadable
    pg.locator("#share").get_by_text("Share this case").click()
    pg.locator("#export").click()
    files = pg.locator("#export-files")
    expect(files).to_contain_text(".png", timeout=T)
    expect(files).to_contain_text(".json")
    hrefs = files.locator("a[href]").evaluate_all("as => as.map(a => a.href)")
    assert any(h.endswith(".png") for h in hrefs) and any(h.endswith(".json") for h in hrefs), hrefs
    for href in hrefs:
        r = pg.request.get(href)
        assert r.ok, (href, r.status)
        body = r.body()
        assert body[:8] == b"\x89PNG\r\n\x1a\n" if href.endswith(".png") else json.loads(body)["models"], href
    _no_error_shown(pg)
    # an upload, searched for colour, then its link opened in another browser
    pg.locator("#attribute input").click()
    pg.get_by_role("option", name="colour", exact=True).click()
    pg.locator("#query-upload input[type=file]").set_input_files(str(_png(tmp_path / "mine.png", seed=11)))
    pg.get_by_role("button", name="Retrieve", exact=True).click()
    expect(pg.locator("#retrieve-grid .pf-query")).to_contain_text("upload", timeout=T)
    link = _share_link(pg, r"[?&]upload=[0-9a-f]{64}(&|$)")
    assert "attribute=colour" in link, link
    other = _open(context(), space.url + link[link.index("?"):])
    expect(other.locator("#attribute input")).to_have_value("colour")
    expect(other.locator("#link-note")).not_to_contain_text("ignored")
    shown = other.locator("#query-upload img")
    expect(shown).to_be_visible(timeout=T)
    shown.evaluate("i => i.complete || new Promise(ok => i.addEventListener('load', ok, {once: true}))")
    assert shown.evaluate("i => i.naturalWidth") == 40
    expect(other.locator("#retrieve-grid .pf-query")).to_contain_text("upload", timeout=T)
    # the page kept its link: the tab's select as the page mounted neither searched nor linked the defaults
    assert "upload=" in other.url and "attribute=colour" in other.url, other.url
    _no_error_shown(other)
    # a share link of a gallery item, opened on Results: the table measures nothing at load, and names no folder
    pg.locator("#examples [data-example='1']").click()
    expect(pg.locator("#attribute input")).not_to_have_value("colour", timeout=T)
    link = _share_link(pg, r"[?&]item=\d+")
    assert "upload=" not in link
    third = _open(context(), space.url + link[link.index("?"):].replace("tab=retrieve", "tab=results"), "Results")
    expect(third.locator("#results-map")).to_contain_text("ASEN", timeout=T)
    expect(third.locator("#results-models")).to_contain_text("two-attrs", timeout=T)  # skipped, with its reason
    expect(third.locator("#results-models")).to_contain_text("2 attributes")
    third.get_by_role("tab", name="Embeddings").click()
    expect(third.locator("#scatter-a circle[data-item]")).to_have_count(60, timeout=T)
    third.get_by_role("tab", name="Fine-tune").click()
    expect(third.locator("#training-off")).to_be_visible(timeout=T)
    _no_error_shown(third)
    for page in (pg, other, third):
        html = page.content()
        assert not leaks(html, roots), leaks(html, roots)[:3]
    assert sent and all(r.ok for r in sent), [(r.url, r.status) for r in sent if not r.ok][:3]


def test_hostile_link_values_are_escaped_cut_short_and_never_break_the_page(space, context):
    expect = sync_api.expect
    ctx = context()
    fetched = []
    ctx.on("request", lambda r: fetched.append(r.url)
           if urllib.parse.urlsplit(r.url).netloc in ("127.0.0.1:9", "evil.example") else None)
    cases = {
        "attribute=" + urllib.request.quote('<img src="http://127.0.0.1:9/t.png">'): "<img",
        "attribute=" + urllib.request.quote('<a href="https://evil.example/">LOG IN</a>'): "LOG IN",
        "item=" + urllib.request.quote("²"): "item",
        "item=" + "9" * 5000: "item",
        "attribute=" + "x" * 5000: "too long",
    }
    for query, shown in cases.items():
        pg = _open(ctx, space.url + "?" + query)
        note = pg.locator("#link-note")
        expect(note).to_contain_text("ignored", timeout=T)
        expect(note).to_contain_text(shown)
        assert note.locator("img, a[href*='evil']").count() == 0, note.inner_html()
        assert len(note.inner_text()) < 1000, len(note.inner_text())
        expect(pg.locator("#attribute input")).not_to_have_value("", timeout=T)  # the default applied
        _no_error_shown(pg)
        pg.close()
    assert not fetched, fetched


# --------------------------------------------------------------------------------------------------------------
# Restart: last, it replaces the app of the tests above


def _owner_tokens(pg) -> set[str]:
    """The owner tokens the page sends with its job events (``secrets.token_urlsafe(24)``: 32 characters)."""
    tokens = set()
    for body in getattr(pg, "_queue_bodies", []):
        try:
            data = json.loads(body).get("data") or []
        except ValueError:
            continue
        tokens.update(d for d in data if isinstance(d, str) and re.fullmatch(r"[A-Za-z0-9_-]{32}", d))
    return tokens


def _watch_queue(pg) -> None:
    pg._queue_bodies = []
    pg.on("request", lambda r: pg._queue_bodies.append(r.post_data or "") if "/queue/join" in r.url else None)


def _fine_tune_refresh(pg) -> set[str]:
    _watch_queue(pg)
    pg.get_by_role("tab", name="Fine-tune").click()
    pg.locator("#job-refresh").click()
    pg.wait_for_timeout(1500)
    sync_api.expect(pg.locator("#job-status")).to_be_visible(timeout=T)
    deadline = time.monotonic() + T / 1000
    while not _owner_tokens(pg) and time.monotonic() < deadline:
        pg.wait_for_timeout(500)
    return _owner_tokens(pg)


def test_a_browsers_job_owner_token_survives_a_restart(space, context):
    secret = space.cache / "browser-secret"
    ctx = context()
    before = _fine_tune_refresh(_open(ctx, space.url))
    assert len(before) == 1, before
    assert secret.is_file() and secret.stat().st_mode & 0o777 == 0o600
    kept = secret.read_bytes()
    space.restart()
    for pg in ctx.pages:
        pg.close()
    after = _fine_tune_refresh(_open(ctx, space.url))
    assert after == before
    assert secret.read_bytes() == kept
    # a browser without the stored state gets a token of its own
    assert _fine_tune_refresh(_open(context(), space.url)).isdisjoint(before)

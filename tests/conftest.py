"""Shared fixtures. ../shared/data (beside the repository) holds the real data used by tests.

Three promises of the test suite live here (tests/test_suite_honesty.py checks each):

- **Its own cache.** Before any test module is imported, :func:`pytest_configure` points ``PROFASHION_CACHE`` and
  ``XDG_CACHE_HOME`` (and the caches of the libraries under it: Hugging Face, torch) at folders under pytest's
  temp dir, so no test reads or writes the user's ``~/.cache/profashion``. One cache per session: the trunk
  feature and weight caches are content-keyed and reused across tests; a test that needs a fresh cache passes
  its own (``cache_root=tmp_path``, or ``monkeypatch.setenv("PROFASHION_CACHE", ...)``).
- **A browser that cannot start is a failure under CI.** With ``CI=true`` the browser tests fail, with one
  sentence naming what is missing and how to install it, where Playwright or /usr/bin/chromium is missing or
  Chromium does not start; elsewhere they skip with that sentence.
- **No job outlives its test.** Jobs run in their own session (process group); every fixture that can start one
  ends it with :func:`end_jobs` in its teardown, and the session's end ends any job still running under the temp
  dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PROFASHION_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")
CHROMIUM = Path("/usr/bin/chromium")
INSTALL_CHROMIUM = ("install Debian's chromium with `apt-get install chromium` (`make test` does this where "
                    "apt-get works)")
# Set for the whole session by pytest_configure (the user's values are never used by a test).
CACHE_ENV = ("PROFASHION_CACHE", "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TORCH_HOME")


@pytest.hookimpl(trylast=True)
def pytest_configure(config) -> None:
    """Every cache the library (and the libraries it calls) find by environment goes under pytest's basetemp:
    ``<basetemp>/user-cache`` stands for ``~/.cache`` and ``<basetemp>/user-cache/profashion`` for the app's
    cache. Runs before collection, so before any test module imports profashion. ``PROFASHION_JOBS`` (a jobs
    folder of the user's) is dropped: jobs go under the cache, as by default."""
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is None:  # the tmp_path plugin is disabled (-p no:tmpdir): a temp dir of our own
        import tempfile

        base = Path(tempfile.mkdtemp(prefix="profashion-tests-"))
    else:
        base = factory.getbasetemp()
    xdg = base / "user-cache"
    xdg.mkdir(parents=True, exist_ok=True)
    values = {"PROFASHION_CACHE": xdg / "profashion", "XDG_CACHE_HOME": xdg, "HF_HOME": xdg / "huggingface",
              "HF_HUB_CACHE": xdg / "huggingface" / "hub", "HUGGINGFACE_HUB_CACHE": xdg / "huggingface" / "hub",
              "TORCH_HOME": xdg / "torch"}
    for name in CACHE_ENV:
        os.environ[name] = str(values[name])
    os.environ.pop("PROFASHION_JOBS", None)


# --- browser tests: fail under CI, skip elsewhere, never silently ------------------------------------------------

def browser_missing() -> str | None:
    """One sentence naming what the browser tests lack and how to install it; None when nothing is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return (f"the browser tests need Playwright, which cannot be imported ({exc}): install the test "
                "dependencies with `make install` (requirements-dev.txt pins playwright)")
    if not CHROMIUM.is_file():
        return f"the browser tests need Debian's Chromium, but {CHROMIUM} is missing: {INSTALL_CHROMIUM}"
    return None


def no_browser(reason: str):
    """Under ``CI=true`` a browser that cannot start fails the test; elsewhere it skips, saying why."""
    if CI:
        pytest.fail(f"{reason} (CI=true: browser tests may not skip)", pytrace=False)
    pytest.skip(reason)


def playwright_sync_api():
    """``playwright.sync_api`` for a browser test module's top level. Without Playwright the module is skipped,
    saying why; under CI it is collected and each test fails in the ``browser`` fixture (None is returned)."""
    try:
        import playwright.sync_api
    except ImportError:
        if CI:
            return None
        pytest.skip(browser_missing(), allow_module_level=True)
    return playwright.sync_api


def _is_browser_skip(report) -> bool:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return any(word in reason.lower() for word in ("chromium", "playwright"))


def _fail_browser_skip(report) -> None:
    """Under CI a browser test that skipped for want of a browser (a module's own skipif or importorskip, or the
    fixture's skip) is reported as failed, with the sentence saying what is missing."""
    if CI and report.skipped and not hasattr(report, "wasxfail") and _is_browser_skip(report):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        report.outcome = "failed"
        report.longrepr = f"{browser_missing() or reason.removeprefix('Skipped: ')} (CI=true: browser tests may not skip)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _fail_browser_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    _fail_browser_skip(report)
    return report


# --- jobs: ended by process group in every teardown ---------------------------------------------------------------

def _members(pgid: int) -> list[int] | None:
    """The live (not zombie) processes of process group ``pgid``; None where /proc cannot be read."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        return None
    out = []
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(d.name))
    return out


def group_alive(pgid: int) -> bool:
    """Some process of the group ``pgid`` still runs (zombies awaiting their parent do not count)."""
    members = _members(pgid)
    if members is not None:
        return bool(members)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _runs_a_job_of(pgid: int, roots: list[Path]) -> bool:
    """The group still runs a job of one of ``roots``: a member's command line names a job folder under one (a
    pid reused by another program is left alone)."""
    members = _members(pgid)
    if members is None:
        return True  # no /proc: trust the record
    names = {str(r) for r in roots} | {str(r.resolve()) for r in roots}
    for pid in members:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in cmd for n in names):
            return True
    return False


def job_groups(*sources) -> dict[int, Path]:
    """``{process group id: jobs root}`` of the jobs of ``sources`` (JobManagers or jobs folders): the processes a
    manager started, and every pid its folder's ``job.json`` files record (a job's pid leads its group: jobs
    start in their own session)."""
    out: dict[int, Path] = {}
    for src in sources:
        root = Path(src) if isinstance(src, (str, os.PathLike)) else Path(src.root)  # (a Path has .root: "/")
        for proc in list(getattr(src, "_procs", {}).values()):
            out[proc.pid] = root
        for record in root.glob("*/job.json") if root.is_dir() else ():
            try:
                pid = json.loads(record.read_text()).get("pid")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(pid, int) and pid > 1:
                out[pid] = root
    return out


def end_jobs(*sources, grace: float = 5.0) -> list[int]:
    """End every job of ``sources`` (JobManagers or jobs folders) still running, by process group: SIGTERM (and
    SIGCONT, for a job held by SIGSTOP), then SIGKILL after ``grace`` seconds. Returns the groups that were
    running. For every fixture's teardown: a job whose test failed or timed out must not outlive pytest."""
    groups = {g: r for g, r in job_groups(*sources).items()
              if g != os.getpgrp() and group_alive(g) and _runs_a_job_of(g, [r])}
    for sig in (signal.SIGTERM, signal.SIGCONT):
        for g in groups:
            try:
                os.killpg(g, sig)
            except (ProcessLookupError, PermissionError):
                pass
    deadline = time.monotonic() + grace
    while any(group_alive(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.1)
    for g in groups:
        if group_alive(g):
            try:
                os.killpg(g, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for src in sources:  # reap the manager's own children (its watcher threads may be gone with the app)
        for proc in list(getattr(src, "_procs", {}).values()):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    deadline = time.monotonic() + 10
    while any(group_alive(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.1)
    return sorted(groups)


@pytest.fixture(scope="session", autouse=True)
def _no_job_outlives_the_session(tmp_path_factory):
    """The net under every fixture's own :func:`end_jobs`: at the session's end, every job recorded under the
    temp dir (a fixture of a file that starts jobs without ending them) is ended by process group."""
    yield
    base = tmp_path_factory.getbasetemp()
    roots = {record.parent.parent for record in base.rglob("job.json")}
    end_jobs(*sorted(roots))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "asen-splits").is_dir():
        pytest.fail(f"the shared data folder is missing: expected {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def asen_splits(shared_data) -> Path:
    return shared_data / "asen-splits"


@pytest.fixture(scope="session")
def fashion_product(shared_data) -> Path:
    return shared_data / "fashion-product-small"


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """A tiny synthetic garment dataset (48 px) shared by the training and CLI tests."""
    from profashion.data.synth import generate_synth

    out = tmp_path_factory.mktemp("data") / "synth"
    return generate_synth(out, 160, 48, 48, size=48, seed=0)


# Tiny models for tests: the scratch presets (small CNN / small hybrid ViT) at 48 px with small batches.
TINY_TRAIN = ["--preset", "scratch", "--model-config", '{"image_size": 48, "resize": 48}', "--batch-size", "16",
              "--triplets-per-epoch", "64", "--warmup-steps", "2", "--quiet"]
# The demo presets (frozen ImageNet EfficientNet-Lite0, cached) at 48 px.
TINY_DEMO_TRAIN = ["--preset", "demo", "--model-config", '{"image_size": 48, "resize": 48}', "--batch-size", "16",
                   "--triplets-per-epoch", "64", "--warmup-steps", "2", "--quiet"]


def free_port() -> int:
    """A free TCP port on the loopback interface, for launching the app in tests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_gallery():
    from profashion.explorer.catalog import GallerySpec

    return GallerySpec(n_train=0, n_valid=8, n_test=60, size=48, seed=1)


# The app tests' embedded gallery: 60 synthetic garments at 48 px.
TINY_GALLERY = _tiny_gallery()


@contextlib.contextmanager
def served_app(checkpoints: Path, base: Path, data_roots: list[Path]):
    """The app as the browser tests start it: the models of ``checkpoints`` on :data:`TINY_GALLERY` (60 points,
    cache in ``base/cache``), fine-tuning jobs in ``base/jobs`` over ``data_roots``, served on a free port. Yields
    ``{"url", "catalog", "jobs", "base"}``; after, every job still running is ended and the server closed."""
    from profashion.explorer import Catalog
    from profashion.explorer.jobs import JobManager
    from profashion.ui import build_demo, launch_kwargs

    catalog = Catalog(checkpoints, base / "cache", gallery=TINY_GALLERY, max_points=60).load()
    jobs = JobManager(base / "jobs", data_roots)
    demo = build_demo(catalog, jobs)
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **launch_kwargs(catalog))
    try:
        yield {"url": f"http://127.0.0.1:{port}/", "catalog": catalog, "jobs": jobs, "base": base}
    finally:
        try:
            end_jobs(jobs)
        finally:
            demo.close()


def load_script(relative: str):
    """A script of the repository (``scripts/ship_results.py``) imported as a module, for the tests that call its
    functions."""
    import importlib.util

    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def save_app_checkpoints(root: Path, models) -> Path:
    """Untrained demo-preset checkpoints (48 px, seed 0) of ``models`` that can serve the synthetic gallery."""
    import torch

    from profashion.data.synth import SYNTH_SCHEMA
    from profashion.models.base import build_model, save_checkpoint

    torch.manual_seed(0)
    for name in models:
        save_checkpoint(build_model(name, "demo", SYNTH_SCHEMA.num_values, image_size=48, resize=48), root / name,
                        extra={"dataset": {"name": "synth"}})
    return root


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright, one per test module. Where it cannot start (Playwright or
    /usr/bin/chromium missing, or the launch fails) the test fails under ``CI=true`` and skips elsewhere, with
    one sentence saying what is missing and how to install it."""
    reason = browser_missing()
    if reason is not None:
        no_browser(reason)
    from playwright.sync_api import Error, sync_playwright

    args = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        except Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            no_browser(f"Debian's Chromium ({CHROMIUM}) is installed but does not start ({first}): reinstall it "
                       f"with `apt-get install --reinstall chromium`")
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def one_thread():
    """Tiny problems: torch's thread pool only adds spin-waits (badly so on a shared, loaded machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

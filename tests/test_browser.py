"""The app driven in a real browser (Playwright + Debian's Chromium), one test per user flow: retrieve,
explore, embeddings, a tiny fine-tuning job from launch to a selectable checkpoint, and a bad upload.

Each flow saves a screenshot under ``test-output/screenshots/``. Chromium is Debian's (``make test``
installs it with apt-get). Where Playwright or /usr/bin/chromium is missing, or Chromium does not start, the
``browser`` fixture (tests/conftest.py) fails each test under ``CI=true`` and skips it elsewhere, with one
sentence saying what is missing and how to install it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import CHROMIUM, TINY_GALLERY, end_jobs, free_port, playwright_sync_api, served_app

from profashion.data.synth import SYNTH_SCHEMA
from profashion.models.base import build_model, save_checkpoint

pytest.importorskip("gradio")
sync_api = playwright_sync_api()
from profashion.explorer import Catalog  # noqa: E402
from profashion.explorer.jobs import JobManager  # noqa: E402
from profashion.models import display_name  # noqa: E402
from profashion.ui import build_demo, launch_kwargs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "test-output" / "screenshots"
MODELS = ("asen", "csn")
T = 60_000  # ms: generous, the CPUs are shared with training


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from profashion.data.synth import generate_synth

    base = tmp_path_factory.mktemp("browser-app")
    data = base / "data"
    generate_synth(data / "synth", 160, 48, 48, size=48, seed=0)
    ck = base / "checkpoints"
    torch.manual_seed(0)
    for name in MODELS:
        save_checkpoint(build_model(name, "demo", SYNTH_SCHEMA.num_values, image_size=48, resize=48), ck / name)
    with served_app(ck, base, [data]) as served:
        yield served


@contextlib.contextmanager
def opened_page(browser, url: str, request, ready):
    """A new browser context's page at ``url``, once ``ready(page)`` returned; after, settled and saved as the
    test's screenshot (``SHOTS/<test name>.png``)."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(T)
    pg.goto(url)
    ready(pg)
    yield pg
    settle(pg)
    pg.screenshot(path=str(SHOTS / f"{request.node.name.removeprefix('test_')}.png"), full_page=True)
    ctx.close()


@contextlib.contextmanager
def page_opener(browser, request, prefix: str = ""):
    """``open(url, size=(1400, 1000), phone=False)``: a new context's page at ``url`` once the page shows its gallery
    switch; after, each page settled and saved as ``SHOTS/<prefix><test name>-<i>.png`` (its first screen)."""
    contexts = []

    def opener(url, size=(1400, 1000), phone=False):
        ctx = browser.new_context(viewport={"width": size[0], "height": size[1]}, is_mobile=phone, has_touch=phone)
        contexts.append(ctx)
        pg = ctx.new_page()
        pg.set_default_timeout(T)
        pg.goto(url)
        sync_api.expect(pg.locator("#gallery")).to_be_visible(timeout=2 * T)
        return pg

    yield opener
    for i, ctx in enumerate(contexts):
        pg = ctx.pages[0]
        settle(pg)
        pg.screenshot(path=str(SHOTS / f"{prefix}{request.node.name.removeprefix('test_')}-{i}.png"))
        ctx.close()


@pytest.fixture
def page(browser, app, request):
    def ready(pg):
        sync_api.expect(pg.get_by_role("button", name="Retrieve", exact=True)).to_be_visible(timeout=T)

    with opened_page(browser, app["url"], request, ready) as pg:
        yield pg


def settle(pg) -> None:
    """Wait until no output is pending (faded) so the screenshot shows results, not a request in flight."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        pg.wait_for_function("() => !document.querySelector('.pending, .generating')", timeout=T)
    except sync_api.Error:
        pass
    pg.wait_for_timeout(300)


def choose_attribute(page, name: str) -> None:
    page.locator("#attribute input").click()
    page.get_by_role("option", name=name, exact=True).click()


def test_retrieve(page, app):
    expect = sync_api.expect
    examples = app["catalog"].examples
    grid = page.locator("#retrieve-grid")
    # the page searches the first example on load, for the attribute that example illustrates
    expect(grid.locator(".pf-row")).to_have_count(len(MODELS), timeout=T)
    expect(page.locator("#attribute input")).to_have_value(examples[0].attribute)
    for name in MODELS:  # one row per model, its name at the row's start, its top-5 beside it
        row = grid.locator(f".pf-row[data-model='{name}']")
        expect(row.locator(".pf-name")).to_contain_text(display_name(name))  # the model's name for people
        expect(row.locator("[data-item]")).to_have_count(5)
        expect(row.locator(".pf-mark").first).to_have_text(__import__("re").compile("✓ hit|✗ miss"))
    # every thumbnail loaded from Gradio's file route, shown no larger than its own pixels (never upscaled)
    sizes = grid.locator("img").evaluate_all("ims => ims.map(i => [i.complete && i.naturalWidth, i.width])")
    assert sizes and all(nat and w <= nat for nat, w in sizes[1:]), sizes
    # a click on an example queries it and sets the attribute it illustrates
    page.locator("#examples [data-example='1']").click()
    expect(page.locator("#attribute input")).to_have_value(examples[1].attribute, timeout=T)
    expect(page.get_by_text(f"Query: gallery item #{examples[1].item}")).to_be_visible(timeout=T)
    expect(grid.locator(".pf-query")).to_contain_text(f"#{examples[1].item}")
    page.get_by_role("button", name="Retrieve", exact=True).click()
    expect(page.locator("#results-table")).to_contain_text("ASEN", timeout=T)
    expect(page.locator("#results-table")).to_contain_text("CSN")
    # a click on a result makes it the next query, and the comparison follows it
    first = grid.locator(".pf-row[data-model='asen'] [data-item]").first
    item = int(first.get_attribute("data-item"))
    first.click()
    expect(page.get_by_text("(now the query)")).to_be_visible(timeout=T)
    expect(page.get_by_text(f"Query: gallery item #{item}")).to_be_visible(timeout=T)
    expect(grid.locator(".pf-query")).to_contain_text(f"#{item}")


def rows_fit(page, width: int, height: int) -> list[list[float]]:
    """Scroll the comparison to the top of the window; the rows' boxes (top, bottom, left, right), each inside
    the window."""
    page.locator("#retrieve-grid").evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    boxes = page.locator("#retrieve-grid .pf-row").evaluate_all(
        "rs => rs.map(r => { const b = r.getBoundingClientRect(); return [b.top, b.bottom, b.left, b.right]; })")
    for _top, _bottom, left, right in boxes:
        assert left >= 0 and right <= width + 0.5, boxes
    return boxes


@pytest.fixture(scope="module")
def app8(tmp_path_factory):
    """The app with eight models (the shipped demo has eight): copies of small asen/csn/triplet checkpoints."""
    base = tmp_path_factory.mktemp("browser-app8")
    ck = base / "checkpoints"
    torch.manual_seed(1)
    for i in range(8):
        method = ("asen", "csn", "triplet")[i % 3]
        save_checkpoint(build_model(method, "demo", SYNTH_SCHEMA.num_values, image_size=48, resize=48),
                        ck / f"{method}-{i}")
    catalog = Catalog(ck, base / "cache", gallery=TINY_GALLERY, max_points=60).load()
    jobs = JobManager(base / "jobs", [base])
    demo = build_demo(catalog, jobs)
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **launch_kwargs(catalog))
    try:
        yield {"url": f"http://127.0.0.1:{port}/", "catalog": catalog}
    finally:
        try:
            end_jobs(jobs)
        finally:
            demo.close()


@pytest.mark.parametrize("size", [(1400, 1000), (390, 844)], ids=["desktop", "mobile"])
def test_eight_models_fit_one_screen(browser, app8, size):
    """Every model's top-5 of a Retrieve lies within one 1400x1000 window; on a phone the rows stack, each as
    wide as the screen at most."""
    expect = sync_api.expect
    width, height = size
    ctx = browser.new_context(viewport={"width": width, "height": height})
    page = ctx.new_page()
    page.set_default_timeout(T)
    try:
        page.goto(app8["url"])
        expect(page.locator("#retrieve-grid .pf-row")).to_have_count(8, timeout=T)
        expect(page.locator("#retrieve-grid [data-item]")).to_have_count(40)
        boxes = rows_fit(page, width, height)
        if width >= 1000:
            assert boxes[-1][1] - boxes[0][0] <= height and all(0 <= b[0] and b[1] <= height for b in boxes), boxes
        else:  # stacked: one row under the other
            assert all(a[1] <= b[0] + 0.5 for a, b in zip(boxes, boxes[1:])), boxes
        settle(page)
        page.screenshot(path=str(SHOTS / f"retrieve_eight_models_{width}x{height}.png"))
    finally:
        ctx.close()


def test_explore_and_embeddings_follow_the_query(page, app):
    expect = sync_api.expect
    page.get_by_role("tab", name="Explore").click()
    expect(page.get_by_text(f"attribute {app['catalog'].examples[0].attribute}")).to_be_visible(timeout=T)
    # the open tab recomputes when the attribute changes, without its button
    choose_attribute(page, "colour")
    expect(page.get_by_text("attribute colour")).to_be_visible(timeout=T)
    expect(page.locator("#explore-stale")).not_to_contain_text("Out of date", timeout=T)
    # Embeddings too
    page.get_by_role("tab", name="Embeddings").click()
    expect(page.get_by_text("colour, tsne").first).to_be_visible(timeout=T)
    choose_attribute(page, "texture")
    expect(page.get_by_text("texture, tsne").first).to_be_visible(timeout=T)
    # a view out of the screen is marked out of date, and refreshed when its tab is opened
    page.get_by_role("tab", name="Retrieve").click()
    page.locator("#examples [data-example='2']").click()
    ex = app["catalog"].examples[2]
    expect(page.get_by_text(f"Query: gallery item #{ex.item}")).to_be_visible(timeout=T)
    expect(page.locator("#explore-stale")).to_contain_text("Out of date", timeout=T)
    page.get_by_role("tab", name="Explore").click()
    expect(page.get_by_text(f"Query: gallery item #{ex.item}, attribute {ex.attribute}")).to_be_visible(timeout=T)
    expect(page.locator("#explore-stale")).not_to_contain_text("Out of date", timeout=T)
    # Embeddings' item box follows the query (a gallery item), so "nearest neighbours" is the query's
    assert ex.item != app["catalog"].examples[0].item
    page.get_by_role("tab", name="Embeddings").click()
    expect(page.get_by_label("Gallery item id")).to_have_value(str(ex.item), timeout=T)


def test_explore(page):
    expect = sync_api.expect
    page.get_by_role("tab", name="Explore").click()
    expect(page.get_by_text("ground-truth region covers")).to_be_visible(timeout=T)
    expect(page.locator("#explore-maps .pf-xrow")).to_have_count(len(MODELS), timeout=T)
    page.get_by_role("button", name="Explain the query").click()
    expect(page.get_by_text("peak on region").first).to_be_visible(timeout=T)


def test_methods_teach_each_model_with_its_own_map_and_follow_the_query(page, app):
    """The Methods tab, added as a tab is added (one module, one entry in demo.TABS): a card per ticked model
    with its pipeline and its main map on the query, refreshed when the models change."""
    expect = sync_api.expect
    page.get_by_role("tab", name="Methods").click()
    cards = page.locator("#methods-cards .pf-method")
    expect(cards).to_have_count(len(MODELS), timeout=T)
    for name in MODELS:
        card = page.locator(f"#methods-cards .pf-method[data-model='{display_name(name)}']")
        expect(card.locator("img")).to_have_attribute("src", re.compile("^data:image/"))
        expect(card.locator("code")).to_contain_text("->")
    page.locator("#models").get_by_label(display_name(MODELS[1]), exact=True).uncheck()
    expect(cards).to_have_count(len(MODELS) - 1, timeout=T)


def test_embeddings(page):
    expect = sync_api.expect
    page.get_by_role("tab", name="Embeddings").click()
    expect(page.locator("#scatter-a circle[data-item]")).to_have_count(60, timeout=T)
    expect(page.locator("#scatter-b circle[data-item]")).to_have_count(60, timeout=T)
    expect(page.get_by_text("kNN accuracy").first).to_be_visible()
    page.locator("#scatter-a circle[data-item='7']").click(force=True)
    expect(page.locator("#neighbours-md")).to_contain_text("Item #7", timeout=T)


def test_fine_tune_another_browsers_job_is_neither_listed_nor_shown(page, app):
    """A job of another browser (another owner token; this page's context is new, so the job the test above
    launched is another browser's too): not in this browser's job list, and asked for by id, one sentence."""
    import json

    from profashion.explorer.jobs import owner_key

    expect = sync_api.expect
    d = app["jobs"].root / "asen-20260101-000000-0bad"
    d.mkdir(parents=True, exist_ok=True)
    d.joinpath("job.json").write_text(json.dumps({"id": d.name, "model": "asen", "dataset": str(app["base"]),
                                                  "preset": "demo", "status": "stopped", "reason": "", "pid": None,
                                                  "created": "2099-01-01T00:00:00Z", "owner": owner_key("other")}))
    page.get_by_role("tab", name="Fine-tune").click()
    expect(page.locator("#job-status")).to_contain_text("No job chosen", timeout=T)
    page.wait_for_timeout(4500)  # two ticks of the timer
    page.locator("#job-list input").click()
    expect(page.get_by_role("option", name=d.name, exact=False)).to_have_count(0)
    assert all(j["id"] not in page.locator("#job-list").inner_text() for j in app["jobs"].list())
    expect(page.locator("#job-status")).to_contain_text("No job chosen")
    box = page.locator("#job-list input")
    box.fill(d.name)
    box.press("Enter")
    expect(page.get_by_test_id("toast-body").first).to_contain_text(f"There is no job '{d.name}' of this browser", timeout=T)


def test_bad_upload_shows_an_error_toast(page, app, tmp_path):
    expect = sync_api.expect
    fake = tmp_path / "holiday.png"
    fake.write_text("this is a text file, not a picture")
    page.locator("#query-upload input[type=file]").set_input_files(str(fake))
    page.get_by_role("button", name="Retrieve", exact=True).click()
    toast = page.get_by_test_id("toast-body")
    expect(toast.first).to_contain_text("not an image we can read", timeout=T)
    # the app keeps serving: an example still searches
    page.locator("#examples [data-example='2']").click()
    ex = app["catalog"].examples[2]
    expect(page.get_by_text(f"Query: gallery item #{ex.item}")).to_be_visible(timeout=T)
    expect(page.locator("#results-table")).to_contain_text("ASEN", timeout=T)


def _proc_tree(root: int) -> list[int]:
    """The pids of the processes below ``root`` (children, their children, ...), from /proc."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    below, todo = [], [root]
    while todo:
        current = todo.pop()
        kids = [p for p, pp in parent.items() if pp == current]
        below += kids
        todo += kids
    return below


def test_chromium_is_debians(browser):
    """The browser these tests drive is Debian's chromium package started through /usr/bin/chromium: it reports
    the version ``/usr/bin/chromium --version`` prints, and its running browser process (below this pytest) is
    an executable of the chromium package (dpkg -S). (Its /proc environ cannot say who started it: Chromium
    writes its process title over that memory.)"""
    out = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=60).stdout
    version = re.search(r"Chromium (\d+(?:\.\d+){3})\b", out)
    assert version and browser.version == version.group(1), (browser.version, out)
    assert "Debian" in out, out
    assert shutil.which("dpkg"), "dpkg is missing: this is not Debian, whose chromium package the tests drive"
    mains = []
    for pid in _proc_tree(os.getpid()):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if Path(exe).name.startswith("chromium") and not any(a.startswith(b"--type=") for a in argv):
            mains.append(exe)
    assert mains, "no Chromium browser process runs below this pytest"
    for exe in mains:
        owner = subprocess.run(["dpkg", "-S", exe], capture_output=True, text=True, timeout=60).stdout
        assert owner.split(":")[0] == "chromium", (exe, owner)

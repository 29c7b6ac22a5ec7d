"""The Results tab in a real browser (Playwright + Debian's Chromium), as a visitor sees it at 1400x1000: the table
is there before any click (the shipped numbers), fits its box, marks the best of each column; a model without
shipped numbers is listed, ticked, measured with the button and moves to the rows measured on the gallery.

Reuses the app and browser of ``tests/test_browser.py``; each flow saves a screenshot under
``test-output/screenshots/``.
"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import load_script, playwright_sync_api
from test_browser import REPO, T, app, page, settle  # noqa: F401 (fixtures)

from profashion.data.synth import SYNTH_SCHEMA
from profashion.models.base import build_model, save_checkpoint

sync_api = playwright_sync_api()  # without a browser: failed under CI, skipped elsewhere
expect = sync_api.expect



@pytest.fixture(scope="module")
def shipped(app):  # noqa: F811
    """The app's checkpoints with their numbers shipped beside them (scripts/ship_results.py on the app's data)."""
    return load_script("scripts/ship_results.py").ship(app["catalog"].checkpoints_root, app["base"] / "data" / "synth", "test", log=lambda m: None)


def open_results(pg) -> None:
    """Reload, let the page's load (which restores the tab its address names) finish, then open Results: a click
    before the load's answer would be undone by it."""
    pg.reload()
    expect(pg.get_by_role("button", name="Retrieve", exact=True)).to_be_attached(timeout=T)
    settle(pg)
    tab = pg.get_by_role("tab", name="Results")
    tab.click()
    expect(tab).to_have_attribute("aria-selected", "true", timeout=T)
    expect(pg.locator("#results-map table")).to_be_visible(timeout=T)


def test_results_table_at_load_fits_and_marks_the_best(page, app, shipped):  # noqa: F811
    open_results(page)
    table = page.locator("#results-map table")
    names = list(shipped["models"])
    # before any click: every model's shipped numbers, overall first, with its interval and the published overall
    expect(table.locator("tr[data-split='shipped'][data-model]")).to_have_count(len(names) + 1, timeout=T)
    for name in names:
        row = table.locator(f"tr[data-model='{name}'][data-split='shipped']")
        overall = row.locator("td").first
        expect(overall).to_contain_text(f"{shipped['models'][name]['overall']:.2f}")
        lo, hi = shipped["models"][name]["ci95"]
        expect(overall).to_contain_text(f"{lo:.1f}–{hi:.1f}")
    expect(table.locator("tr.pf-res-n")).to_contain_text(str(shipped["dataset"]["queries"]))
    expect(table.locator("thead")).to_contain_text("FashionAI")
    expect(table.locator("tr[data-split='pending']")).to_have_count(0)
    # the best of each column: bold, marked, and one per column at least (overall + every attribute with queries)
    best = table.locator("td.pf-best")
    assert best.count() >= 1 + len(shipped["dataset"]["n_queries"])
    assert best.first.evaluate("td => parseInt(getComputedStyle(td).fontWeight, 10)") >= 700
    expect(best.first).to_contain_text("▲")
    # it fits its box at 1400 px: no column off-screen, no horizontal scroll
    box = page.locator("#results-map").evaluate(
        "el => { const t = el.querySelector('table').getBoundingClientRect(); const b = el.getBoundingClientRect();"
        " return {tr: t.right, br: b.right, sw: el.scrollWidth, cw: el.clientWidth, vw: window.innerWidth,"
        " last: el.querySelector('thead tr:last-child th:last-child').getBoundingClientRect().right}; }")
    assert box["tr"] <= box["br"] + 1 and box["sw"] <= box["cw"] + 1 and box["last"] <= box["vw"], box
    # "Models loaded" names the folder, never the server's path
    models_md = page.locator("#results-models")
    expect(models_md).to_contain_text("Models loaded")
    assert str(app["catalog"].checkpoints_root) not in models_md.inner_text()


def test_results_measures_a_model_without_shipped_numbers(page, app, shipped, tmp_path):  # noqa: F811
    catalog = app["catalog"]
    torch.manual_seed(11)
    save_checkpoint(build_model("triplet", "demo", SYNTH_SCHEMA.num_values, image_size=48, resize=48), tmp_path / "ft")
    entry = catalog.add_checkpoint("ft-triplet", tmp_path / "ft")
    assert entry.error is None
    open_results(page)
    table = page.locator("#results-map table")
    expect(table.locator("tr[data-model='ft-triplet'][data-split='pending']")).to_be_visible(timeout=T)
    page.get_by_role("button", name=re.compile("Measure")).click()
    row = table.locator("tr[data-model='ft-triplet'][data-split='gallery']")
    expect(row).to_be_visible(timeout=T)
    expect(table.locator("tr.pf-res-group[data-split='gallery']")).to_contain_text("gallery's own test split")
    expect(table.locator("tr[data-split='shipped'][data-model]")).to_have_count(len(shipped["models"]) + 1)
    expect(table.locator("tr[data-split='pending']")).to_have_count(0)
    settle(page)

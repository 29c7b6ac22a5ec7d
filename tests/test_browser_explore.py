"""Explore's maps in a real browser (Playwright + Debian's Chromium): the map-type switch, the opacity slider
(restyles without asking the server), the ground-truth outline on every panel, one note for an upload.

Reuses the app, browser and page fixtures of ``test_browser.py`` (the page is 1400x1000; each flow saves a
screenshot under ``test-output/screenshots/``).
"""

from __future__ import annotations

import json

import pytest
import test_browser as tb
from PIL import Image
from test_browser import MODELS, SHOTS, T, settle, sync_api

from profashion.models import display_name

app, page = tb.app, tb.page  # the app with asen and csn, a 1400x1000 page (Chromium: conftest)


# each visible panel of the maps: its size, and whether it has a ground-truth outline layer that is drawn
PANELS_JS = """root => [...root.querySelectorAll('.pf-p')].filter(p => p.offsetParent !== null).map(p => {
  const s = p.querySelector('.pf-s').getBoundingClientRect();
  const gt = p.querySelector('.pf-gt');
  return [Math.round(s.width), Math.round(s.height), !!gt && getComputedStyle(gt).backgroundImage.startsWith('url(')];
})"""


def open_explore(page):
    page.get_by_role("tab", name="Explore").click()
    sync_api.expect(page.locator("#explore-maps .pf-xrow")).to_have_count(len(MODELS), timeout=T)


def test_explore_main_map_and_all_maps_same_size_outline_on_each(page, app):
    expect = sync_api.expect
    open_explore(page)
    maps = page.locator("#explore-maps")
    expect(page.locator("#explore-head")).to_contain_text("ground-truth region covers", timeout=T)
    expect(maps.locator(".pf-cbar")).to_be_visible()  # the colour bar
    for name in MODELS:  # the model's name for people at its row's start
        expect(maps.locator(f".pf-xrow[data-model='{name}'] .pf-xname")).to_contain_text(display_name(name))
    main = maps.evaluate(PANELS_JS)
    assert len(main) == 1 + len(MODELS), main  # the query, then one main map per model
    assert len({(w, h) for w, h, _ in main}) == 1 and main[0][0] >= 100  # one size for all
    assert all(gt for _, _, gt in main), main  # the outline on every panel, not only the first
    expect(maps.locator(".pf-xwords").first).to_contain_text("of the map lies on the")
    expect(page.locator("#explore-table")).to_contain_text("peak on region")
    page.get_by_label("all maps").check()
    expect(maps.locator(".pf-plan").first).to_be_visible(timeout=T)
    every = maps.evaluate(PANELS_JS)
    assert len(every) > len(main) and len({(w, h) for w, h, _ in every}) == 1 and all(g for _, _, g in every), every
    # a plan shows its heaviest columns only, with readable labels
    plan = maps.locator(".pf-plan").first
    assert plan.locator("thead th").count() <= 1 + 8
    size = plan.locator("td").first.evaluate("td => parseFloat(getComputedStyle(td).fontSize)")
    assert size >= 11
    settle(page)
    page.screenshot(path=str(SHOTS / "explore_all_maps.png"), full_page=True)
    page.get_by_label("main map").check()
    expect(maps.locator(".pf-plan").first).to_be_hidden(timeout=T)
    assert len(maps.evaluate(PANELS_JS)) == len(main)


def _timer_events(page) -> set[int]:
    """The indices of the events a gr.Timer triggers (its "tick"), read from the page's /config."""
    config = page.evaluate("() => fetch('config').then(r => r.json())")
    timers = {c["id"] for c in config["components"] if c.get("type") == "timer"}
    return {d.get("id", i) for i, d in enumerate(config["dependencies"])
            if any(t[0] in timers for t in d.get("targets", []))}


def test_explore_opacity_slider_reblends_in_the_page(page):
    expect = sync_api.expect
    open_explore(page)
    heat = page.locator("#explore-maps .pf-heat").first
    expect(heat).to_be_visible(timeout=T)
    assert float(heat.evaluate("e => getComputedStyle(e).opacity")) == pytest.approx(0.5)
    # mark the rendered maps: a new render from the server would replace the element and lose the mark
    page.locator("#explore-maps .pf-x").evaluate("e => { e.dataset.mark = 'kept'; }")
    requests = []
    ticks = _timer_events(page)  # the job timer's tick every 2 s is not a recomputation
    assert ticks

    def joined(r):
        if "/gradio_api/queue/join" in r.url and (json.loads(r.post_data or "{}").get("fn_index") not in ticks):
            requests.append(r.url)

    page.on("request", joined)
    page.locator("#explore-opacity input[type=range]").fill("80")
    page.wait_for_function("() => getComputedStyle(document.querySelector('#explore-maps .pf-heat')).opacity === '0.8'",
                           timeout=T)
    page.locator("#explore-opacity input[type=range]").fill("0")
    page.wait_for_function("() => getComputedStyle(document.querySelector('#explore-maps .pf-heat')).opacity === '0'",
                           timeout=T)
    assert page.locator("#explore-maps .pf-x").get_attribute("data-mark") == "kept"
    assert not requests, requests  # nothing was computed again
    page.locator("#explore-opacity input[type=range]").fill("65")
    page.wait_for_function("() => getComputedStyle(document.querySelector('#explore-maps .pf-heat')).opacity === "
                           "'0.65'", timeout=T)


def test_explore_an_upload_gets_one_note_and_no_outline_or_table(page, app, tmp_path):
    expect = sync_api.expect
    open_explore(page)
    ex = app["catalog"].examples[0]
    upload = tmp_path / "mirrored.png"
    with Image.open(ex.path) as im:
        im.transpose(Image.FLIP_LEFT_RIGHT).convert("RGB").save(upload)
    page.locator("#query-upload input[type=file]").set_input_files(str(upload))
    head = page.locator("#explore-head")
    expect(head).to_contain_text("Query: an uploaded image", timeout=T)
    expect(head).to_contain_text("no ground-truth region")
    assert head.inner_text().count("no ground-truth region") == 1  # one note, not one per model
    maps = page.locator("#explore-maps")
    expect(maps.locator(".pf-xrow")).to_have_count(len(MODELS))
    assert maps.locator(".pf-gt").count() == 0 and maps.locator(".pf-xwords", has_text="lies on the").count() == 0
    expect(page.locator("#explore-table")).to_be_hidden()

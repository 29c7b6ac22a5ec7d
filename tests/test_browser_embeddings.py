"""The Embeddings explorer driven in a real browser (Playwright + Debian's Chromium), one test per flow: hover
thumbnails, a click highlighting the point and its neighbours in both plots, box and lasso selection with the
grid and its purity, colour by another attribute, zoom. Each flow saves a screenshot under
``test-output/screenshots/`` (the app and browser fixtures are ``test_browser``'s)."""

from __future__ import annotations

import re

import pytest
import test_browser as tb
from test_browser import SHOTS, T, choose_attribute, settle, sync_api

from profashion.ui.common import K

app, page = tb.app, tb.page  # the app with asen and csn, a 1400x1000 page (Chromium: conftest)
expect = sync_api.expect


def open_explorer(page, attribute: str = "colour") -> None:
    """The Embeddings tab, its plots drawn for ``attribute`` (60 points each)."""
    page.get_by_role("tab", name="Embeddings").click()
    choose_attribute(page, attribute)
    expect(page.locator("#embeddings-md-a")).to_contain_text(f"{attribute}, tsne", timeout=T)
    expect(page.locator("#embeddings-md-b")).to_contain_text(f"{attribute}, tsne", timeout=T)
    for key in "ab":
        expect(page.locator(f"#scatter-{key} circle[data-item]")).to_have_count(60, timeout=T)
    expect(page.locator("#scatter-a .pf-e-title")).to_contain_text(f"ASEN: {attribute} (t-SNE)", timeout=T)


def shot(page, name: str) -> None:
    settle(page)
    page.screenshot(path=str(SHOTS / f"embeddings_{name}.png"), full_page=True)


def plotted(page, key: str) -> set[int]:
    return {int(i) for i in page.locator(f"#scatter-{key} circle[data-item]").evaluate_all(
        "cs => cs.map(c => c.dataset.item)")}


def test_hover_shows_the_items_thumbnail_value_and_id(page, app):
    open_explorer(page)
    page.locator("#scatter-a circle[data-item='7']").hover(force=True)
    tip = page.locator("#embeddings-explorer .pf-e-tip")
    expect(tip).to_be_visible()
    value = app["catalog"].item_values(7)["colour"]
    expect(tip).to_contain_text("Item #7")
    expect(tip).to_contain_text(f"colour: {value}")
    img = tip.locator("img")
    assert "gradio_api/file=" in img.get_attribute("src")
    page.wait_for_function("() => { const i = document.querySelector('#embeddings-explorer .pf-e-tip img');"
                           " return i && i.complete && i.naturalWidth > 0; }", timeout=T)
    # the same item is outlined in the other model's plot
    expect(page.locator("#scatter-b circle.pf-hov")).to_have_attribute("data-item", "7")
    assert page.locator("#embeddings-explorer [title^='item 7:']").count() == 0  # not the browser's plain tooltip
    shot(page, "hover")


def test_click_highlights_the_point_and_its_neighbours_in_both_plots(page, app):
    catalog = app["catalog"]
    open_explorer(page)
    page.locator("#scatter-a circle[data-item='7']").click(force=True)
    for key, model in (("a", "asen"), ("b", "csn")):
        expect(page.locator(f"#scatter-{key} circle.pf-focus")).to_have_attribute("data-item", "7", timeout=5000)
        nn = {j for j, _ in catalog.neighbours(model, "colour", 7, K)} & plotted(page, key)
        expect(page.locator(f"#scatter-{key} circle.pf-nn")).to_have_count(len(nn))
        shown = {int(i) for i in page.locator(f"#scatter-{key} circle.pf-nn").evaluate_all(
            "cs => cs.map(c => c.dataset.item)")}
        assert shown == nn and len(nn) >= 1  # each plot its own model's neighbours, in the full space
        expect(page.locator(f"#scatter-{key} .pf-e-links line")).to_have_count(len(nn))
        assert page.locator(f"#scatter-{key} svg").get_attribute("class").endswith("pf-faded")
    expect(page.locator("#embeddings-explorer .pf-e-info")).to_contain_text("Item #7")
    # the server lists the neighbours below, with their values and scores, captions uncut
    grid = page.locator("#neighbours-grid")
    expect(grid.locator(".pf-query")).to_contain_text("Item #7", timeout=T)
    expect(grid.locator(".pf-row")).to_have_count(2)
    expect(grid.locator(".pf-item")).to_have_count(2 * K)
    expect(page.locator("#neighbours-md")).to_contain_text("Item #7")
    # a click on a listed neighbour moves the highlight to it
    first = grid.locator(".pf-row[data-model='csn'] .pf-item").first
    nxt = first.get_attribute("data-item")
    first.click()
    expect(page.locator("#scatter-b circle.pf-focus")).to_have_attribute("data-item", nxt, timeout=5000)
    expect(grid.locator(".pf-query")).to_contain_text(f"Item #{nxt}", timeout=T)
    shot(page, "click_neighbours")
    # Clear removes the highlight
    page.get_by_role("button", name="Clear the highlight and the selection").click()
    expect(page.locator("#embeddings-explorer circle.pf-focus")).to_have_count(0)


def drag(page, key: str, points: list[tuple[float, float]]) -> None:
    """Drag through ``points`` (fractions of the plot's box) in plot ``key``."""
    svg = page.locator(f"#scatter-{key} svg")
    svg.scroll_into_view_if_needed()  # the mouse moves in the window: the plot must be in it
    box = svg.bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=6)
    page.mouse.up()


def purity_of(catalog, items: set[int], attribute: str) -> float:
    values = [catalog.item_values(i).get(attribute) for i in items]
    known = [v for v in values if v is not None]
    return 100 * max(known.count(v) for v in set(known)) / len(known)


def test_box_and_lasso_selection_fill_the_grid_with_a_purity(page, app):
    catalog = app["catalog"]
    open_explorer(page)
    drag(page, "a", [(0.1, 0.1), (0.9, 0.9)])
    sel = page.locator("#scatter-a circle.pf-sel")
    expect(sel.first).to_be_attached(timeout=5000)
    items = {int(i) for i in sel.evaluate_all("cs => cs.map(c => c.dataset.item)")}
    assert 1 <= len(items) <= 60
    cards = page.locator("#embeddings-explorer .pf-e-grid .pf-e-card")
    expect(cards).to_have_count(len(items))
    assert {int(i) for i in cards.evaluate_all("cs => cs.map(c => c.dataset.item)")} == items
    expect(page.locator("#scatter-b circle.pf-sel")).to_have_count(len(items))  # linked: the same items in B
    purity = page.locator("#embeddings-explorer .pf-e-purity")
    expect(purity).to_contain_text(f"{len(items)} selected")
    assert float(purity.get_attribute("data-purity")) == pytest.approx(purity_of(catalog, items, "colour"), abs=0.05)
    expect(cards.first.locator("img")).to_have_attribute("src", re.compile("gradio_api/file="))
    shot(page, "box_selection")
    # a lasso (a triangle) in B selects what lies inside it
    page.get_by_role("button", name="Lasso select").click()
    drag(page, "b", [(0.05, 0.05), (0.95, 0.1), (0.5, 0.95), (0.05, 0.05)])
    expect(page.locator("#embeddings-explorer .pf-e-purity")).to_contain_text("lasso in CSN", timeout=5000)
    lasso = {int(i) for i in page.locator("#scatter-b circle.pf-sel").evaluate_all("cs => cs.map(c => c.dataset.item)")}
    assert lasso and cards.count() == len(lasso)
    shot(page, "lasso_selection")


def test_colour_by_another_attribute(page, app):
    catalog = app["catalog"]
    open_explorer(page)
    explorer = page.locator("#embeddings-explorer")
    texture_at = catalog.attributes.index("texture")
    explorer.get_by_label("Colour by").select_option(value=str(texture_at))
    expect(explorer.get_by_label("Colour by").locator("option:checked")).to_have_text(
        f"texture · {len(catalog.dataset.schema.values[texture_at])} values")
    data_fill = page.locator("#scatter-a circle[data-item='3']").get_attribute("fill")
    texture = catalog.item_values(3)["texture"]
    legend = page.locator("#scatter-a .pf-e-legend")
    expect(legend.locator(f"[data-value='{texture}']")).to_be_visible()
    swatch = legend.locator(f"[data-value='{texture}'] i").evaluate("i => getComputedStyle(i).backgroundColor")
    r, g, b = (int(data_fill[i:i + 2], 16) for i in (1, 3, 5))
    assert swatch == f"rgb({r}, {g}, {b})"  # the point wears its texture's colour
    assert "colour" not in {s.get_attribute("data-value") for s in legend.locator("span").all()}
    page.locator("#scatter-a circle[data-item='3']").hover(force=True)
    expect(explorer.locator(".pf-e-tip")).to_contain_text(f"texture: {texture}")
    shot(page, "colour_by_texture")


def positions(page, key: str, items=(0, 1)) -> list[tuple[float, float]]:
    return [tuple(float(page.locator(f"#scatter-{key} circle[data-item='{i}']").get_attribute(a))
                  for a in ("cx", "cy")) for i in items]


def test_zoom_in_out_box_wheel_and_reset(page):
    open_explorer(page)
    explorer = page.locator("#embeddings-explorer")
    (ax, ay), (bx, by) = positions(page, "a")
    explorer.get_by_role("button", name="Zoom in").click()
    (ax2, ay2), (bx2, by2) = positions(page, "a")
    assert ((ax2 - bx2) ** 2 + (ay2 - by2) ** 2) ** 0.5 == pytest.approx(1.5 * ((ax - bx) ** 2 + (ay - by) ** 2) ** 0.5,
                                                                          rel=0.01)
    expect(page.locator("#scatter-a svg")).to_have_attribute("data-zoom", "1.500")
    explorer.get_by_role("button", name="Reset zoom").click()
    expect(page.locator("#scatter-a svg")).to_have_attribute("data-zoom", "1.000")
    assert positions(page, "a") == [(ax, ay), (bx, by)]
    # a zoom box around the middle quarter
    explorer.get_by_role("button", name="Zoom box").click()
    drag(page, "a", [(0.3, 0.3), (0.7, 0.7)])
    assert float(page.locator("#scatter-a svg").get_attribute("data-zoom")) > 2
    shot(page, "zoom_box")
    explorer.get_by_role("button", name="Reset zoom").click()
    # ctrl + wheel zooms around the pointer; the plain wheel leaves the plot alone (the page scrolls)
    page.locator("#scatter-b svg").scroll_into_view_if_needed()
    box = page.locator("#scatter-b svg").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 200)
    expect(page.locator("#scatter-b svg")).to_have_attribute("data-zoom", "1.000")
    page.locator("#scatter-b svg").scroll_into_view_if_needed()  # the page scrolled: the pointer back on the plot
    box = page.locator("#scatter-b svg").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.keyboard.down("Control")
    page.mouse.wheel(0, -300)
    page.keyboard.up("Control")
    expect(page.locator("#scatter-b svg")).not_to_have_attribute("data-zoom", "1.000")
    assert float(page.locator("#scatter-b svg").get_attribute("data-zoom")) > 1

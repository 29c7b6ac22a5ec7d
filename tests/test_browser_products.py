"""The app on its real galleries and shipped checkpoints (issue 22), in Chromium: the page answers while the models
warm up, and the Embeddings tab plots every product photo, with hover, click and lasso working at that scale."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port
from test_browser import SHOTS, T, choose_attribute, settle, sync_api
from test_browser_embeddings import drag

pytest.importorskip("gradio")
from profashion.explorer.galleries import Galleries, default_galleries  # noqa: E402
from profashion.explorer.jobs import JobManager  # noqa: E402
from profashion.ui import build_demo, launch_kwargs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
expect = sync_api.expect
ATTRIBUTE = "baseColour"


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read()


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The app on both embedded galleries with the shipped checkpoints and an empty cache, launched before its
    models are served (as app.py does); what the page and /galleries said before the first model was served."""
    base = tmp_path_factory.mktemp("real-app")
    galleries = Galleries.load(default_galleries(REPO), cache_root=base / "cache", models=False)
    demo = build_demo(galleries, JobManager(base / "jobs", [base]))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **launch_kwargs(galleries))
    try:
        status, _ = _get(url)
        from gradio_client import Client

        before = Client(url, verbose=False, download_files=False).predict(api_name="/galleries")
        served_before = {g["name"]: len(g["models"]) for g in before if g.get("available")}
        t0 = time.perf_counter()
        warm = threading.Thread(target=galleries.load_models, daemon=True)
        warm.start()
        warm.join(600)
        yield {"url": url, "galleries": galleries, "page_status": status, "before": before,
               "served_before": served_before, "served_s": time.perf_counter() - t0}
    finally:
        demo.close()


def test_the_page_answers_before_any_model_is_served_and_lists_them_warming_up(real):
    assert real["page_status"] == 200
    assert real["served_before"] == {"synthetic": 0, "products": 0}
    for g in (g for g in real["before"] if g.get("available")):
        assert len(g["warming_up"]) == 8, g["name"]
        assert g["warming_note"].startswith("0 of 8 models ready; warming up:")
    galleries = real["galleries"]
    assert all(len(c.models) == 8 and not c.warming for c in galleries.catalogs.values())
    # every model came from its shipped index: nothing was embedded
    assert all(e.shipped for c in galleries.catalogs.values() for e in c.models.values())


def test_embeddings_plots_every_product_photo_and_hover_click_and_lasso_work(real, browser):
    catalog = real["galleries"].get("products")
    labelled = int((catalog.engine.index("asen").values[:, catalog.attributes.index(ATTRIBUTE)] >= 0).sum())
    assert labelled > 2000
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(T)
    try:
        pg.goto(real["url"] + "?gallery=products&tab=embeddings")
        expect(pg.get_by_role("tab", name="Embeddings")).to_have_attribute("aria-selected", "true", timeout=T)
        choose_attribute(pg, ATTRIBUTE)
        for key in "ab":
            expect(pg.locator(f"#scatter-{key} circle[data-item]")).to_have_count(labelled, timeout=T)
        # 2,302 points overlap: hover one that is on top at its own centre (another would take the mouse); the
        # explorer may draw again once both plots' data are in, so a hover that meets a redraw is tried again
        tip = pg.locator("#embeddings-explorer .pf-e-tip")
        for attempt in range(3):
            pg.wait_for_timeout(1000)
            item = int(pg.evaluate("""() => {
              document.querySelector('#scatter-a svg').scrollIntoView({block: 'center'});
              for (const c of document.querySelectorAll('#scatter-a circle[data-item]')) {
                const r = c.getBoundingClientRect();
                if (r.width && document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === c)
                  return c.dataset.item;
              }
              return -1; }"""))
            assert item >= 0
            try:
                pg.locator(f"#scatter-a circle[data-item='{item}']").hover(force=True)
                expect(tip).to_contain_text(f"Item #{item}", timeout=5000)
                break
            except (AssertionError, sync_api.Error):
                if attempt == 2:
                    raise
        expect(tip).to_contain_text(f"{ATTRIBUTE}: {catalog.item_values(item)[ATTRIBUTE]}")
        pg.locator(f"#scatter-a circle[data-item='{item}']").click(force=True)
        expect(pg.locator("#scatter-a circle.pf-focus")).to_have_attribute("data-item", str(item), timeout=5000)
        expect(pg.locator("#scatter-a circle.pf-nn").first).to_be_attached(timeout=5000)
        pg.get_by_role("button", name="Lasso select").click()
        drag(pg, "b", [(0.05, 0.05), (0.95, 0.1), (0.5, 0.95), (0.05, 0.05)])
        expect(pg.locator("#embeddings-explorer .pf-e-purity")).to_contain_text("lasso in", timeout=5000)
        chosen = pg.locator("#scatter-b circle.pf-sel").count()
        assert 0 < chosen <= labelled
        settle(pg)
        pg.screenshot(path=str(SHOTS / "products_embeddings_all_points.png"), full_page=True)
    finally:
        ctx.close()


def test_the_shipped_projections_are_the_ones_served(real):
    """An Embeddings answer on the products gallery reads the shipped projection (cached), not a new one."""
    catalog = real["galleries"].get("products")
    proj = catalog.projection("asen", ATTRIBUTE, "umap")
    assert proj.cached
    shipped = np.load(catalog.models["asen"].checkpoint / "gallery-index" / "projections.npz")[f"umap-{ATTRIBUTE}"]
    np.testing.assert_allclose(proj.xy, shipped)
    manifest = json.loads((catalog.models["asen"].checkpoint / "gallery-index" / "manifest.json").read_text())
    assert manifest["shape"][0] == catalog.num_items


def test_every_endpoint_that_takes_a_gallery_accepts_the_product_gallerys_attributes(real):
    """Through the API, each endpoint with a ``gallery`` parameter takes the product gallery's attributes and models
    (the default gallery's choices were once checked instead: /embeddings refused ``baseColour``)."""
    from gradio_client import Client, handle_file

    catalog = real["galleries"].get("products")
    client = Client(real["url"], verbose=False, download_files=False)
    names = list(catalog.models)[:2]
    query = handle_file(catalog.item_path(11))
    _, _, status = client.predict(query, ATTRIBUTE, names, "products", api_name="/retrieve")
    assert "gallery item #11" in status
    html, _, md = client.predict(query, ATTRIBUTE, names, "products", api_name="/explore")
    assert "#11" in html and ATTRIBUTE in md
    text, md_a, md_b, _ = client.predict(names[0], names[1], ATTRIBUTE, "umap", "products", api_name="/embeddings")
    data = json.loads(text)
    assert [p["model"] for p in data["plots"]] == names and ATTRIBUTE in md_a
    grid, nn_md = client.predict(names[0], names[1], ATTRIBUTE, 11, "products", api_name="/neighbours")
    assert "Item #11" in grid
    files = client.predict(query, ATTRIBUTE, names, "products", api_name="/export")
    assert len(files) == 2


def test_the_product_gallerys_defaults_show_where_the_shipped_models_differ(real):
    """Not the trivial masterCategory (every model near 97%) with ASEN against Triplet: the first example's
    attribute is the one whose shipped numbers spread most, and Embeddings' pair is its best and worst model."""
    products = real["galleries"].get("products")
    shipped = json.loads((Path(products.checkpoints_root) / "results.json").read_text())["models"]
    per = {a: {n: r["per_attribute"][a] for n, r in shipped.items()} for a in products.attributes}
    spread = {a: max(v.values()) - min(v.values()) for a, v in per.items()}
    first = products.examples[0].attribute
    assert first != "masterCategory" and spread[first] == max(spread.values()), spread
    a, b = products.default_pair()
    assert per[first][a] == max(per[first].values()) and per[first][b] == min(per[first].values())
    # the page's first screen of that gallery says so: the switch sets the same query, attribute and pair
    from profashion.ui.demo import switch_gallery
    from profashion.ui.tab_embeddings import gallery_values

    out = switch_gallery(real["galleries"], "products", [((), gallery_values)])
    assert out[1] == products.examples[0].path and out[3]["value"] == first
    assert (out[6]["value"], out[7]["value"]) == (a, b)


def test_the_shipped_familiarity_references_are_used_not_recomputed(real, monkeypatch):
    """Each embedded gallery's reference ships beside its checkpoints (2,302 photos would cost minutes of CPU at
    every cold start): an empty cache reads it, and computes nothing."""
    import profashion.explorer.catalog as catalog_module

    def refuse(*a, **k):
        raise AssertionError("the shipped reference should have been used")

    monkeypatch.setattr(catalog_module, "check_images", refuse)
    for name, n in (("synthetic", 400), ("products", 2302)):
        cat = real["galleries"].get(name)
        cat.familiarity = None
        check = cat.ensure_familiarity()
        assert check is not None and len(check.features) == n == cat.num_items
        assert check.fingerprint == cat._images_digest  # made from these very image files

"""The app's handlers are plain functions over the catalog: called here directly, without launching Gradio."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_GALLERY, save_app_checkpoints

from profashion.retrieval.search import QueryError

gr = pytest.importorskip("gradio")

from profashion.explorer import Catalog  # noqa: E402
from profashion.ui import tab_embeddings, tab_finetune, tab_retrieve, views  # noqa: E402
from profashion.ui.common import guard, path_of  # noqa: E402

MODELS = ("asen", "triplet")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Catalog:
    root = save_app_checkpoints(tmp_path_factory.mktemp("checkpoints"), MODELS)
    return Catalog(root, tmp_path_factory.mktemp("cache"), gallery=TINY_GALLERY, max_points=60).load()


def test_retrieve_handler_gives_the_api_outputs_and_the_grid(catalog):
    item, path = catalog.examples[0][:2]
    found, table, status, state = tab_retrieve.retrieve(catalog, {"path": path}, "colour", list(MODELS))
    assert len(found) == len(table) == 2 * 5 and [h["item"] for h in found] == list(table["item"])
    assert {h["hit"] for h in found} <= {True, False} and all(h["image"].startswith("gradio_api/file=") for h in found) and list(table["model"].unique()) == ["ASEN", "Triplet"]
    assert f"gallery item #{item}" in status and state["hits"] == list(table["item"])
    html = state["html"]
    assert html.startswith('<div class="pf-cmp" data-models="2">') and html.count('class="pf-item') == 10
    assert all(f'data-item="{i}"' in html for i in state["hits"])


def test_handlers_raise_the_librarys_errors_and_guard_turns_them_into_one_sentence(catalog):
    path = catalog.examples[0][1]
    with pytest.raises(QueryError, match="no model selected"):
        tab_retrieve.retrieve(catalog, path, "colour", [])
    event = guard(tab_retrieve.retrieve, tab_retrieve.ERRORS, catalog)
    with pytest.raises(gr.Error) as err:
        event(path, "colour", [])
    assert err.value.message == "No model selected: tick at least one model"
    with pytest.raises(QueryError, match="hat"):
        tab_retrieve.retrieve(catalog, path, "hat", list(MODELS))


def test_clicks_pick_a_result_an_example_or_a_point(catalog):
    path, text = tab_retrieve.pick_result(catalog, {"item": 3})
    assert path == catalog.item_path(3) and text.startswith("**Item #3** (now the query)")
    with pytest.raises(QueryError, match="no longer available"):
        tab_retrieve.pick_result(catalog, {"item": catalog.num_items})
    with pytest.raises(QueryError):
        tab_retrieve.pick_result(catalog, {})
    ex = catalog.examples[1]
    assert tab_retrieve.pick_example(catalog, {"example": 1}) == (ex.path, ex.attribute)
    with pytest.raises(QueryError, match="unknown example"):
        tab_retrieve.pick_example(catalog, {"example": len(catalog.examples)})
    assert tab_embeddings.clicked_item({"item": 7, "plot": "a"}) == 7
    with pytest.raises(QueryError, match="click on a point"):
        tab_embeddings.clicked_item({})


def test_values_of_the_wrong_type_are_one_sentence_of_the_library(catalog):
    """An API caller's list where a name goes, a number where a list goes, an item that is no number (third hostile
    probe): the library's own sentence, never Python's words echoing the value."""
    n = catalog.num_items
    for item in ("<img src=x>AAAA", [1], {"a": 1}, True, 1.5, "NaN", "٣", "1e3", None.__class__):
        with pytest.raises(QueryError, match=rf"^the item is a gallery item id: a whole number from 0 to {n - 1}$"):
            tab_embeddings.item_id(catalog, item)
    assert [tab_embeddings.item_id(catalog, v) for v in (3, 3.0, " 3 ", "12")] == [3, 3, 3, 12]
    for models in (5, True, "asen", {"asen": 1}, [["asen"]], [1]):
        with pytest.raises(QueryError, match="^the models are given as a list of model names; loaded models: "):
            catalog.asked(models)
    assert catalog.asked(["asen", "", None, "triplet"]) == ["asen", "triplet"] and catalog.asked(None) == []


def test_methods_cards_show_each_models_pipeline_and_main_map(catalog):
    from profashion.ui import tab_methods

    path = catalog.examples[0][1]
    html = tab_methods.methods(catalog, {"path": path}, "colour", list(MODELS))
    assert html.count('class="pf-method"') == len(MODELS) and html.count('src="data:image/png;base64,') == 2
    for name in MODELS:
        assert f'data-model="{catalog.models[name].label}"' in html
    assert "backbone -&gt; GAP -&gt; FC -&gt; L2 norm" in html  # the triplet network's pipeline, escaped
    with pytest.raises(QueryError, match="no model selected"):
        tab_methods.methods(catalog, {"path": path}, "colour", [])


def test_neighbours_handler_shows_k_per_chosen_model(catalog):
    html, md = tab_embeddings.neighbours(catalog, "asen", "triplet", "colour", 2)
    assert html.count('class="pf-item') == 2 * 5 and '<figure class="pf-query" data-item="2">' in html
    assert md.startswith("**Item #2**: colour = ") and md.count("neighbours share the value") == 2
    with pytest.raises(QueryError, match="no item id"):
        tab_embeddings.neighbours(catalog, "asen", None, "colour", None)


def _specs(calls: list) -> dict:
    """Three views declared as the app's tabs declare them: two on the shared choices, needing a query (one sets
    two outputs), and one with its own two choices that needs none."""
    from profashion.ui.tabs import View

    def q_keys(ch, own):
        return [path_of(ch.query), ch.attribute, list(ch.models or []), ch.gallery]

    def computed(name, values):
        return lambda ch, own: calls.append((name, ch.values(), own)) or values

    return {"retrieve": View(["g", "grid"], computed("retrieve", ("G", "H")), q_keys, "r-banner", "R stale"),
            "explore": View(["maps"], computed("explore", ("M",)), q_keys, "e-banner", "E stale"),
            "embeddings": View(["plot"], computed("embeddings", ("P",)),
                               lambda ch, own: [ch.attribute, *own, ch.gallery], "b-banner", "B stale",
                               inputs=["model_a", "method"], needs_query=False)}


def test_the_views_recompute_only_the_open_tab_and_mark_the_others_stale():
    calls = []
    specs = _specs(calls)
    choices = ({"path": "/q.png"}, "colour", ["asen"], "synthetic", "asen", "tsne")  # shared, then Embeddings' own
    out = views.refresh(specs, None, None, choices, True)
    assert len(out) == 1 + 4 + 3 and out[1:5] == ("G", "H", gr.skip(), gr.skip())
    assert calls == [("retrieve", ({"path": "/q.png"}, "colour", ["asen"], "synthetic"), ())]
    view = out[0]
    assert view["tab"] == "retrieve" and view["shown"]["retrieve"] == ["/q.png", "colour", ["asen"], "synthetic"]
    assert out[-3:] == ("", "", "")
    again = views.refresh(specs, view, None, choices, True)  # the same choices: nothing recomputed
    assert len(calls) == 1 and again[1:5] == (gr.skip(),) * 4
    new = ("/other.png", *choices[1:])
    assert views.banners(specs, view, views.keys_of(specs, *views.split(specs, new))) == ("R stale", "", "")
    out = views.refresh(specs, view, "embeddings", new, True)
    assert calls[-1] == ("embeddings", ("/other.png", "colour", ["asen"], "synthetic"), ("asen", "tsne"))
    assert out[-3:] == ("R stale", "", "")  # Embeddings now shown: its banner clears; Retrieve's is out of date
    other = (*choices[:3], "products", *choices[4:])  # another gallery: every view is out of date
    assert views.banners(specs, out[0], views.keys_of(specs, *views.split(specs, other))) == ("R stale", "", "B stale")
    # no query image: a view that needs one is not computed, one that does not is
    calls.clear()
    views.refresh(specs, None, "explore", (None, *choices[1:]), True)
    views.refresh(specs, None, "embeddings", (None, *choices[1:]), True)
    assert [c[0] for c in calls] == ["embeddings"]
    assert path_of({"path": "/x"}) == "/x" and path_of(None) is None


def test_no_view_is_computed_or_linked_before_the_pages_load_answers(catalog, tmp_path: Path):
    """A tab's select fires as the page mounts, with the default choices; its answer could land after the link's
    and show (and link) the defaults instead of the link's case (seen in CI)."""
    from profashion.ui.demo import link_opener

    calls = []
    specs = _specs(calls)
    choices = ({"path": "/q.png"}, "colour", ["asen"], "synthetic", "asen", "tsne")
    out = views.refresh(specs, dict(views.MOUNTING), "retrieve", choices, True)
    assert calls == [] and out == (gr.skip(),) * 8  # not even the view state: the load's is on its way
    assert views.is_ready(views.ready("explore")) and views.is_ready(None) and not views.is_ready(views.MOUNTING)
    # the mount's select can also be served after the load answered, still with the default choices it captured
    # (seen in CI: the link's one model came back as the default two): a select of the open tab computes nothing
    out = views.refresh(specs, views.ready("retrieve"), "retrieve", choices, True)
    assert calls == [] and out == (gr.skip(),) * 8
    out = views.refresh(specs, views.ready("retrieve"), "explore", choices, True)  # another tab: computed
    assert [c[0] for c in calls] == ["explore"] and out[0]["tab"] == "explore"
    refused = link_opener(None, None, [(["a", "b", "c"], None)]).refused()
    assert len(refused) == 1 + 6 + 3 + 1 + 2 and views.is_ready(refused[-2]) and "Reload the page" in refused[-1]


def test_fine_tune_handlers_without_a_job(catalog, tmp_path: Path):
    from profashion.explorer.jobs import JobError, JobManager

    jobs = JobManager(tmp_path / "jobs", [tmp_path])
    record, md, log, fig = tab_finetune.job_view(catalog, jobs, None)
    assert record == {} and md == tab_finetune.NO_JOB and log == "" and fig is not None
    assert tab_finetune.list_jobs(jobs) == [] and tab_finetune.job_choices(jobs) == []
    with pytest.raises(JobError):
        tab_finetune.job_status(catalog, jobs, "no-such-job")
    epochs, triplets, batch, warmup = tab_finetune.on_preset("demo", "asen")
    assert min(epochs, triplets, batch) >= 1 and warmup >= 0
    seen = tab_finetune.tick(catalog, jobs, None, {}, list(MODELS))[-1]
    assert seen["names"] == list(catalog.models) and seen["jobs"] == []


def test_fine_tune_handlers_show_a_browser_its_own_jobs_only_owner(catalog, tmp_path: Path):
    import json

    from profashion.explorer.jobs import JobError, JobManager, owner_key

    jobs = JobManager(tmp_path / "jobs", [tmp_path])
    d = tmp_path / "jobs" / "asen-20260101-000000-beef"
    d.mkdir(parents=True)
    d.joinpath("job.json").write_text(json.dumps({"id": d.name, "model": "asen", "dataset": str(tmp_path),
                                                  "preset": "demo", "status": "stopped", "reason": "", "pid": None,
                                                  "created": "2026-01-01T00:00:00Z", "owner": owner_key("mine")}))
    assert tab_finetune.job_choices(jobs, "mine") == [(f"{d.name} (stopped)", d.name)]
    assert tab_finetune.job_choices(jobs, "theirs") == tab_finetune.list_jobs(jobs) == []
    record, md, _, _ = tab_finetune.job_status(catalog, jobs, d.name, "mine")
    assert record["id"] == d.name and "owner" not in record and "Status: stopped" in md
    with pytest.raises(JobError, match="there is no job 'asen-20260101-000000-beef' of this browser: a job is seen, stopped, resumed"):
        tab_finetune.job_status(catalog, jobs, d.name, "theirs")
    out = tab_finetune.tick(catalog, jobs, d.name, {}, list(MODELS), "theirs")
    assert out[-1]["jobs"] == [] and out[-1]["job"] is None and out[2] == tab_finetune.NO_JOB
    assert tab_finetune.tick(catalog, jobs, None, {}, list(MODELS), "mine")[-1]["job"] == d.name
    token = tab_finetune.new_owner(None)
    assert len(token) >= 22 and tab_finetune.new_owner(token) == token and tab_finetune.new_owner("x") != "x"

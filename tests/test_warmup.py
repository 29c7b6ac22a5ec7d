"""Serving while warming up (issue 22, item 3): the galleries and the models' names load first, the models
themselves after, and nothing waits for a model it does not ask for."""

from __future__ import annotations

import threading

import pytest
from conftest import TINY_GALLERY, save_app_checkpoints

pytest.importorskip("gradio")
from profashion.explorer.catalog import WARMING, Catalog  # noqa: E402
from profashion.explorer.galleries import Galleries  # noqa: E402
from profashion.retrieval.search import QueryError  # noqa: E402
from profashion.ui import build_demo, tab_retrieve  # noqa: E402

MODELS = ("asen", "triplet")


@pytest.fixture
def warming(tmp_path_factory):
    root = save_app_checkpoints(tmp_path_factory.mktemp("checkpoints"), MODELS)
    return Catalog(root, tmp_path_factory.mktemp("cache"), gallery=TINY_GALLERY).load(models=False)


def test_models_are_listed_as_warming_up_before_they_are_served(warming):
    assert warming.models == {} and warming.listed == list(MODELS)
    assert warming.empty_message() is None  # not "no checkpoint found"
    assert warming.warming_note() == "0 of 2 models ready; warming up: asen, triplet"
    with pytest.raises(QueryError, match=r"model 'asen' is still warming up \(0 of 2 models ready"):
        warming.check_models(["asen"], wait=0)
    # the page builds with every model offered and ticked, and says which are warming up
    demo = build_demo(Galleries([warming]))
    models = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "models")
    assert [c[1] for c in models.choices] == list(MODELS) and models.value == list(MODELS)
    about = [b for b in demo.blocks.values() if "warming up" in str(getattr(b, "value", ""))]
    assert about


def test_a_retrieve_answers_warming_models_in_their_own_rows_and_the_others_at_once(warming, monkeypatch):
    monkeypatch.setattr("profashion.explorer.catalog.RETRIEVE_WAIT", 0.0)
    query = warming.item_path(2)
    results, _ = warming.search(query, "colour", list(MODELS))
    assert all(r.error.startswith(WARMING) and not r.hits for r in results.values())
    _, _, status, hits = tab_retrieve.retrieve(warming, query, "colour", list(MODELS))
    assert hits["html"].count("warming up") >= 2 and "failed" not in hits["html"]
    warming.load_models()
    results, _ = warming.search(query, "colour", list(MODELS))
    assert all(not r.error and len(r.hits) == 5 for r in results.values())


def test_a_query_waits_for_the_model_it_asks_for(warming):
    ready = threading.Event()

    def serve():
        warming.load_models()
        ready.set()

    threading.Thread(target=serve, daemon=True).start()
    assert warming.check_models(["triplet"], wait=120) == ["triplet"]  # waited, did not refuse
    assert "triplet" in warming.models
    ready.wait(120)
    assert warming.warming_note() == "" and warming.listed == list(MODELS)


def test_a_model_that_fails_to_warm_up_leaves_the_lists_with_its_reason(warming):
    (warming.checkpoints_root / "asen" / "model.safetensors").write_bytes(b"not weights")
    warming.load_models()
    assert list(warming.models) == ["triplet"] and warming.listed == ["triplet"]
    with pytest.raises(QueryError, match="cannot serve the gallery"):
        warming.check_models(["asen"])
    assert str(warming.checkpoints_root) not in warming.skipped[0].error
    # a page that still ticks it gets its reason in its own row, and the other model's answer
    results, _ = warming.search(warming.item_path(2), "colour", list(MODELS))
    assert "cannot serve the gallery" in results["asen"].error and len(results["triplet"].hits) == 5


def test_a_checkpoint_of_other_attributes_is_never_offered(tmp_path_factory):
    import torch

    from profashion.models.base import build_model, save_checkpoint

    root = save_app_checkpoints(tmp_path_factory.mktemp("checkpoints"), ["asen"])
    torch.manual_seed(0)
    save_checkpoint(build_model("triplet", "demo", [3, 4], image_size=48, resize=48), root / "two-attrs")
    catalog = Catalog(root, tmp_path_factory.mktemp("cache"), gallery=TINY_GALLERY).load(models=False)
    assert catalog.listed == ["asen"]
    assert "trained on 2 attributes but the gallery has 10" in catalog.failure("two-attrs")


def test_explore_shares_one_frozen_trunk_pass_and_draws_the_same_maps(tmp_path_factory):
    """The eight rows of an Explore run the frozen EfficientNet stages once (the models are given one input tensor),
    and every map is the one a model draws alone."""
    import numpy as np
    import torch

    from profashion.models.backbones import FrozenPretrained, shared_frozen_outputs
    from profashion.ui import tab_explore

    root = save_app_checkpoints(tmp_path_factory.mktemp("checkpoints"), MODELS)
    catalog = Catalog(root, tmp_path_factory.mktemp("cache"), gallery=TINY_GALLERY).load()
    calls = []  # each real run of a frozen part's layers (a forward hook: the memo's hits do not run them)
    for name in MODELS:
        frozen = [m for m in catalog.engine.model(name).modules() if isinstance(m, FrozenPretrained)]
        assert frozen
        for m in frozen:
            m.layers.register_forward_hook(lambda mod, args, out: calls.append(mod))
    _, img = catalog.decode_query(catalog.item_path(5))
    a = catalog.attributes.index("colour")
    alone = {}
    for name in MODELS:
        model = catalog.engine.model(name)
        alone[name] = model.explain(model.preprocess.to_tensor(img), a)
    assert len(calls) == len(MODELS)  # alone: one pass each
    calls.clear()
    tab_explore._CACHE.clear()
    with shared_frozen_outputs():
        views = [tab_explore.model_maps(catalog, name, img, a, 5, None) for name in MODELS]
    assert len(calls) == 1  # one pass, its output handed to both models
    assert all(view.panels for view in views)
    with shared_frozen_outputs():
        shared = {name: catalog.engine.model(name).explain(
            catalog.engine.model_input(catalog.engine.model(name), img, "k")[0], a) for name in MODELS}
    for name in MODELS:
        assert [m.name for m in alone[name].maps] == [m.name for m in shared[name].maps]
        for m1, m2 in zip(alone[name].maps, shared[name].maps):
            np.testing.assert_allclose(torch.as_tensor(m1.data).numpy(), torch.as_tensor(m2.data).numpy(), atol=1e-5)


def test_the_starting_page_answers_until_gradio_takes_the_port():
    """app.py's StartingPage: ``/`` says the app is starting (and reloads itself), anything else is 503 so that no
    client takes it for the app; closed, it leaves the port free for Gradio."""
    import socket
    import urllib.error
    import urllib.request

    from conftest import free_port, load_script

    app = load_script("app.py")
    port = free_port()
    page = app.StartingPage("127.0.0.1", port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?gallery=products", timeout=10) as r:
            body = r.read().decode()
            assert r.status == 200 and "Starting" in body and 'http-equiv="refresh"' in body
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10)
        assert err.value.code == 503
    finally:
        page.close()
    with socket.socket() as s:  # free again, at once
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:  # a port already taken: no starting page, and no error (Gradio reports it)
        assert app.StartingPage("127.0.0.1", busy.getsockname()[1]).server is None
    finally:
        busy.close()


def test_gradio_loaded_through_the_stub_finder_skips_rewriting_its_stubs_and_builds_apps(tmp_path):
    """app.py's _NoStubRewrite: Gradio imported after it has the stub writer as a no-op, and still builds a page."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('app', sys.argv[1]); "
            "app = importlib.util.module_from_spec(spec); spec.loader.exec_module(app); "
            "sys.meta_path.insert(0, app._NoStubRewrite()); import gradio as gr, gradio.component_meta as cm; "
            "assert cm.create_or_modify_pyi('x', 'y', []) is None and cm.create_or_modify_pyi.__name__ == '<lambda>'; "
            "b = gr.Blocks(); b.__enter__(); gr.Textbox('hi'); b.__exit__(None, None, None); print('ok')")
    out = subprocess.run([sys.executable, "-c", code, str(repo / "app.py")], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]

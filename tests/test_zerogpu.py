"""ZeroGPU readiness (issue 22, item 6): the ``spaces`` package is installed and pinned, its decorator wraps the calls
that run models, and off a ZeroGPU Space it changes nothing (the CPU path is the one every other test runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from profashion import device

REPO = Path(__file__).resolve().parents[1]


def test_spaces_is_pinned_in_the_requirements_a_space_installs():
    lines = (REPO / "requirements.txt").read_text().splitlines()
    assert any(ln.startswith("spaces==") for ln in lines)


def test_off_zerogpu_the_decorator_returns_the_function_itself(monkeypatch):
    pytest.importorskip("spaces")
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def f(x):
        return x + 1

    assert device.on_gpu(f) is f
    assert device.on_gpu(duration=30)(f) is f
    assert device.zero_gpu() is False and device.serving_device() == "cpu"


def test_on_gpu_hands_the_function_and_duration_to_spaces(monkeypatch):
    spaces = pytest.importorskip("spaces")
    seen = []

    def fake_gpu(fn, duration=None):
        seen.append((fn.__name__, duration))
        return fn

    monkeypatch.setattr(spaces, "GPU", fake_gpu)
    device.on_gpu(lambda: 1)
    device.on_gpu(duration=120)(test_spaces_is_pinned_in_the_requirements_a_space_installs)
    assert seen == [("<lambda>", None), ("test_spaces_is_pinned_in_the_requirements_a_space_installs", 120)]


def test_the_model_calls_of_the_app_are_the_decorated_ones():
    """Catalog.search, explain and measured go through on_gpu: off ZeroGPU they are the plain functions (no
    ``zerogpu`` wrapper attribute), and their code is the catalog's own."""
    pytest.importorskip("gradio")
    from profashion.explorer.catalog import Catalog

    for name in ("search", "explain", "measured"):
        fn = getattr(Catalog, name)
        assert not hasattr(fn, "zerogpu")
        assert fn.__module__ == "profashion.explorer.catalog"
    source = (REPO / "profashion" / "explorer" / "catalog.py").read_text()
    assert source.count("@on_gpu") >= 3


def test_a_zerogpu_space_serves_on_cuda_and_elsewhere_the_device_asked(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert device.zero_gpu() and device.serving_device() == "cuda"
    monkeypatch.delenv("SPACES_ZERO_GPU")
    monkeypatch.setenv("PROFASHION_DEVICE", "cpu")
    assert device.serving_device() == "cpu"
    monkeypatch.setenv("PROFASHION_DEVICE", "tpu9")
    with pytest.raises(ValueError, match="unknown device"):
        device.serving_device()

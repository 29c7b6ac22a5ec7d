"""Shared fixtures. ../shared/data (beside the repository) holds the real data used by tests."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PROFASHION_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


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
    from profashion.ui.catalog import GallerySpec

    return GallerySpec(n_train=0, n_valid=8, n_test=60, size=48, seed=1)


# The app tests' embedded gallery: 60 synthetic garments at 48 px.
TINY_GALLERY = _tiny_gallery()


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
    """Debian's Chromium driven by Playwright, one per test module (the browser tests skip without it)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = Path("/usr/bin/chromium")
    if not chromium.is_file():
        pytest.skip("browser tests skipped: /usr/bin/chromium is missing")
    args = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(chromium), args=args, headless=True)
        try:
            yield b
        finally:
            b.close()

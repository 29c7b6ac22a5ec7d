"""Shared fixtures. ../shared/data (beside the repository) holds the real data used by tests."""

from __future__ import annotations

import os
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

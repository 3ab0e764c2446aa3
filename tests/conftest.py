"""Shared fixtures: the real-data folder (skips with a reason when absent) and seeded RNGs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    return Path(os.environ.get("MEDSEG_TEST_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the read-only real datasets; tests that need it skip with the reason when it is absent."""
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"real test data not found at {root} (set MEDSEG_TEST_DATA to the shared/data folder)")
    return root


@pytest.fixture
def shared_file(shared_data):
    """Return a path inside the real data folder, skipping if that particular item is missing."""

    def _get(relative: str) -> Path:
        path = shared_data / relative
        if not path.exists():
            pytest.skip(f"{relative} not found under {shared_data}")
        return path

    return _get


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)

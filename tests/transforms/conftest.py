"""Augmentation tests run on one torch thread, as the loader runs augmentation (medseg.train.loader.one_torch_thread):
thousands of tiny ops on a 2-thread pool each wait for a busy core on a shared machine."""

from __future__ import annotations

import pytest

from medseg.train.loader import one_torch_thread


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield

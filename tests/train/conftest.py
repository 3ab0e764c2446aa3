"""A tiny preprocessed synthetic cache shared by the training tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.config.loader import load_config
from medseg.config.schema import RunConfig

TINY_OVERRIDES = [
    "plan.target_spacing=[3.0,3.0,6.0]",
    "train.patch_size=[32,32,16]",
    "train.batch_size=2",
    "train.epochs=4",
    "train.iterations_per_epoch=6",
    "train.val_every=2",
    "train.num_folds=2",
    "train.threads=1",
    "train.tensorboard=false",
    "model.base_features=4",
    "model.max_features=16",
    "preprocess.workers=1",
]


def tiny_config(*extra: str) -> RunConfig:
    return load_config(None, TINY_OVERRIDES + list(extra))


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    from medseg.data.synthetic import make_synthetic_dataset
    from medseg.train.api import prepare_cache

    root = tmp_path_factory.mktemp("tiny_synthetic")
    dataset = make_synthetic_dataset(root / "dataset", cases=4, seed=3, fov_mm=(120, 120, 72))
    config = tiny_config(f"work_dir={root / 'work'}")
    return prepare_cache(dataset, config, progress=False)

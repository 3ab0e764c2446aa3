"""Deterministic k-fold cross-validation splits, stored in a JSON file so every run agrees."""

from __future__ import annotations

import json
import random
from pathlib import Path

from medseg.errors import ConfigError
from medseg.io.atomic import atomic_path


def make_splits(case_ids: list[str], num_folds: int = 5, seed: int = 12345) -> list[dict[str, list[str]]]:
    """Shuffle sorted ids with a fixed seed and deal them into folds (same ids + seed -> same folds)."""
    ids = sorted(case_ids)
    if len(ids) < num_folds:
        raise ConfigError(f"{len(ids)} cases cannot make {num_folds} folds; lower train.num_folds")
    random.Random(seed).shuffle(ids)
    folds = [ids[index::num_folds] for index in range(num_folds)]
    return [
        {"train": sorted(case for other, fold in enumerate(folds) if other != held for case in fold), "val": sorted(folds[held])}
        for held in range(num_folds)
    ]


def load_or_create_splits(path: Path, case_ids: list[str], num_folds: int, seed: int) -> list[dict[str, list[str]]]:
    """Reuse ``path`` when it covers exactly these cases and fold count; otherwise (re)create it."""
    path = Path(path)
    if path.is_file():
        splits = json.loads(path.read_text())
        covered = sorted({case for fold in splits for case in fold["val"]})
        if len(splits) == num_folds and covered == sorted(case_ids):
            return splits
    splits = make_splits(case_ids, num_folds, seed)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(splits, indent=1))
    return splits

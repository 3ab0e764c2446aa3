"""Deterministic k-fold cross-validation splits, stored in a JSON file so every run agrees."""

from __future__ import annotations

import json
import random
from pathlib import Path

from medseg.errors import ConfigError
from medseg.io.atomic import write_json

#: What the validation of ``--fold all`` is, in logs, summary.json and checkpoints: the training cases themselves.
TRAINING_CASES = "training cases (fold all)"


def held_out(fold: int) -> str:
    return f"held-out fold {fold}"


def make_splits(case_ids: list[str], num_folds: int = 5, seed: int = 12345) -> list[dict[str, list[str]]]:
    """Shuffle sorted ids with a fixed seed and deal them into folds (same ids + seed -> same folds)."""
    ids = sorted(case_ids)
    if len(ids) < num_folds:
        raise ConfigError(f"{len(ids)} case(s) cannot make {num_folds} folds: train on every case with --fold all, or lower train.num_folds")
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
    write_json(path, splits, indent=1)
    return splits


def fold_cases(cache_dir: Path, case_ids: list[str], config) -> tuple[list[str], list[str], str]:
    """``(train ids, validation ids, what the validation is)`` for ``config.fold`` (a number, or ``all``).

    ``all`` trains on every case, as nnU-Net's ``all`` fold; its validation then runs on training
    cases and is labelled so, since it says nothing about unseen data.
    """
    if config.fold == "all":
        return list(case_ids), list(case_ids), TRAINING_CASES
    if len(case_ids) < config.num_folds:
        raise ConfigError(f"{len(case_ids)} case(s) cannot make {config.num_folds} folds: train on every case with --fold all, "
                          f"or use fewer folds (--set train.num_folds={max(2, len(case_ids))}, then --fold 0,...,{max(2, len(case_ids)) - 1})")
    splits = load_or_create_splits(Path(cache_dir) / "splits.json", case_ids, config.num_folds, config.split_seed)
    if config.fold >= len(splits):
        raise ConfigError(f"train.fold={config.fold} but there are {len(splits)} folds (0 to {len(splits) - 1})")
    return splits[config.fold]["train"], splits[config.fold]["val"], held_out(config.fold)

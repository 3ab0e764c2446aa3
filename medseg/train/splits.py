"""Deterministic k-fold cross-validation splits, stored in a JSON file so every run agrees.

With a grouping (``train.split_group``: a regular expression whose first group, else whole match,
names a case's group, e.g. the patient of ``LIDC-IDRI-0001_R_3`` with ``^(.*)_R_``) the folds are
group-disjoint: every case of a patient is in the same fold, so no patient is trained on and
validated at once. Without one the folds are exactly what they always were.
"""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path

from medseg.errors import ConfigError
from medseg.io.atomic import write_json

log = logging.getLogger(__name__)

#: What the validation of ``--fold all`` is, in logs, summary.json and checkpoints: the training cases themselves.
TRAINING_CASES = "training cases (fold all)"


def held_out(fold: int) -> str:
    return f"held-out fold {fold}"


def case_groups(case_ids: list[str], pattern: str) -> dict[str, str]:
    """Case id -> group id by ``pattern`` (its first capture group, else the whole match).

    A case the pattern does not match is its own group (with one warning saying how many);
    a pattern that matches no case at all is a mistake and refused.
    """
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ConfigError(f"train.split_group {pattern!r} is not a regular expression ({error})") from None
    groups, unmatched = {}, 0
    for case in case_ids:
        match = compiled.search(case)
        if match is None or not (match.group(1) if compiled.groups else match.group(0)):
            groups[case], unmatched = case, unmatched + 1
        else:
            groups[case] = match.group(1) if compiled.groups else match.group(0)
    if case_ids and unmatched == len(case_ids):
        raise ConfigError(f"train.split_group {pattern!r} matches none of the {len(case_ids)} case ids (e.g. {sorted(case_ids)[0]!r})")
    if unmatched:
        log.warning("train.split_group %r matches %d of %d case ids; each other case is its own group", pattern, len(case_ids) - unmatched, len(case_ids))
    return groups


def _grouped_folds(case_ids: list[str], num_folds: int, seed: int, pattern: str) -> list[list[str]]:
    """Whole groups dealt into folds: largest first, each to the fold with the fewest cases so far
    (ties: the lowest fold), groups of one size in a seeded shuffled order. Fold sizes then differ
    by at most the largest group."""
    groups = case_groups(case_ids, pattern)
    members: dict[str, list[str]] = {}
    for case in sorted(case_ids):
        members.setdefault(groups[case], []).append(case)
    if len(members) < num_folds:
        raise ConfigError(f"{len(members)} group(s) by train.split_group {pattern!r} cannot make {num_folds} folds: lower train.num_folds")
    order = sorted(members)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda group: -len(members[group]))  # stable: the shuffle orders groups of one size
    folds: list[list[str]] = [[] for _ in range(num_folds)]
    for group in order:
        min(folds, key=len).extend(members[group])
    return folds


def make_splits(case_ids: list[str], num_folds: int = 5, seed: int = 12345, group: str | None = None) -> list[dict[str, list[str]]]:
    """Shuffle sorted ids with a fixed seed and deal them into folds (same ids + seed -> same folds);
    with ``group`` (a regular expression, :func:`case_groups`) whole groups are dealt instead."""
    ids = sorted(case_ids)
    if len(ids) < num_folds:
        raise ConfigError(f"{len(ids)} case(s) cannot make {num_folds} folds: train on every case with --fold all, or lower train.num_folds")
    if group:
        folds = _grouped_folds(ids, num_folds, seed, group)
    else:
        random.Random(seed).shuffle(ids)
        folds = [ids[index::num_folds] for index in range(num_folds)]
    return [
        {"train": sorted(case for other, fold in enumerate(folds) if other != held for case in fold), "val": sorted(folds[held])}
        for held in range(num_folds)
    ]


def crossing_groups(splits: list[dict[str, list[str]]], pattern: str) -> list[str]:
    """Groups whose cases lie in more than one validation fold (empty: the folds are group-disjoint)."""
    cases = [case for fold in splits for case in fold["val"]]
    groups = case_groups(cases, pattern)
    seen: dict[str, set[int]] = {}
    for index, fold in enumerate(splits):
        for case in fold["val"]:
            seen.setdefault(groups[case], set()).add(index)
    return sorted(group for group, folds in seen.items() if len(folds) > 1)


def load_or_create_splits(path: Path, case_ids: list[str], num_folds: int, seed: int, group: str | None = None) -> list[dict[str, list[str]]]:
    """Reuse ``path`` when it covers exactly these cases and fold count (and, with ``group``, keeps
    every group in one fold); otherwise (re)create it."""
    path = Path(path)
    if path.is_file():
        splits = json.loads(path.read_text())
        covered = sorted({case for fold in splits for case in fold["val"]})
        if len(splits) == num_folds and covered == sorted(case_ids):
            crossing = crossing_groups(splits, group) if group else []
            if not crossing:
                return splits
            log.warning("%s: %d group(s) by train.split_group %r span several folds; writing group-disjoint folds", path, len(crossing), group)
    splits = make_splits(case_ids, num_folds, seed, group)
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
    splits = load_or_create_splits(Path(cache_dir) / "splits.json", case_ids, config.num_folds, config.split_seed, config.split_group)
    if config.fold >= len(splits):
        raise ConfigError(f"train.fold={config.fold} but there are {len(splits)} folds (0 to {len(splits) - 1})")
    return splits[config.fold]["train"], splits[config.fold]["val"], held_out(config.fold)

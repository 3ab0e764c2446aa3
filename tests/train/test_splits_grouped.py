"""Patient-disjoint folds (train.split_group): no group crosses folds, folds stay balanced and
deterministic, and datasets without a grouping keep exactly the folds they always had."""

from __future__ import annotations

import json
import logging
import random

import pytest

from medseg.errors import ConfigError
from medseg.train.config import TrainConfig
from medseg.train.splits import case_groups, crossing_groups, fold_cases, load_or_create_splits, make_splits

LIDC_GROUP = "^(.*)_R_"


def lidc_like_ids(patients: int = 60, seed: int = 3) -> list[str]:
    """``LIDC-IDRI-<patient>_R_<nodule>`` with 1 to 7 nodules per patient (LIDC's skew: most have one or two)."""
    rng = random.Random(seed)
    ids = []
    for patient in range(patients):
        count = rng.choice([1, 1, 1, 2, 2, 3, 4, 7])
        ids += [f"LIDC-IDRI-{patient:04d}_R_{nodule}" for nodule in rng.sample(range(1, 15), count)]
    return ids


def test_without_grouping_the_folds_are_the_old_ones():
    """Snapshot of make_splits before grouping existed: existing datasets keep their folds."""
    ids = [f"case_{i:03d}" for i in range(13)]
    assert [fold["val"] for fold in make_splits(ids, 5, 12345)] == [
        ["case_000", "case_009", "case_012"], ["case_002", "case_010", "case_011"], ["case_003", "case_006", "case_008"],
        ["case_001", "case_005"], ["case_004", "case_007"]]
    hippocampus = [f"hippocampus_{i:03d}" for i in (1, 3, 4, 6, 7, 8, 10, 11, 13, 14, 17, 19, 23)]
    assert [fold["val"] for fold in make_splits(hippocampus, 3, 7, group=None)] == [
        ["hippocampus_001", "hippocampus_006", "hippocampus_008", "hippocampus_011", "hippocampus_019"],
        ["hippocampus_010", "hippocampus_013", "hippocampus_014", "hippocampus_017"],
        ["hippocampus_003", "hippocampus_004", "hippocampus_007", "hippocampus_023"]]


def test_grouped_folds_are_patient_disjoint_balanced_complete_and_deterministic():
    ids = lidc_like_ids()
    assert crossing_groups(make_splits(ids, 5, 12345), LIDC_GROUP), "case-by-case folds split patients (why grouping is needed)"
    splits = make_splits(ids, 5, 12345, group=LIDC_GROUP)
    assert crossing_groups(splits, LIDC_GROUP) == []
    patients = case_groups(ids, LIDC_GROUP)
    for fold in splits:
        assert not {patients[c] for c in fold["train"]} & {patients[c] for c in fold["val"]}, "a patient in train and val"
        assert sorted(fold["train"] + fold["val"]) == sorted(ids)
    assert sorted(case for fold in splits for case in fold["val"]) == sorted(ids)
    sizes = [len(fold["val"]) for fold in splits]
    largest_group = max(sum(1 for c in ids if patients[c] == p) for p in set(patients.values()))
    assert max(sizes) - min(sizes) <= largest_group and largest_group == 7
    assert max(sizes) - min(sizes) <= 1  # in practice the small groups fill the gaps
    assert make_splits(list(reversed(ids)), 5, 12345, group=LIDC_GROUP) == splits
    assert make_splits(ids, 5, 1, group=LIDC_GROUP) != splits


def test_group_is_the_first_capture_group_else_the_whole_match():
    assert case_groups(["LIDC-IDRI-0001_R_3", "LIDC-IDRI-0001_R_12"], LIDC_GROUP) == {
        "LIDC-IDRI-0001_R_3": "LIDC-IDRI-0001", "LIDC-IDRI-0001_R_12": "LIDC-IDRI-0001"}
    assert case_groups(["pat7-scan2"], r"^pat\d+") == {"pat7-scan2": "pat7"}


def test_unmatched_cases_are_their_own_group_and_bad_groupings_are_refused(caplog):
    ids = lidc_like_ids(patients=10) + ["odd_one"]
    with caplog.at_level(logging.WARNING, logger="medseg.train.splits"):
        groups = case_groups(ids, LIDC_GROUP)
    assert groups["odd_one"] == "odd_one" and f"matches {len(ids) - 1} of {len(ids)} case ids" in caplog.text
    with pytest.raises(ConfigError, match="not a regular expression"):
        make_splits(ids, 5, group="^(.*_R_")
    with pytest.raises(ConfigError, match="matches none"):
        make_splits(ids, 5, group="^nothing(.*)")
    with pytest.raises(ConfigError, match="3 group"):
        make_splits([f"p{p}_R_{n}" for p in range(3) for n in range(4)], 5, group=LIDC_GROUP)


def test_an_old_split_file_that_splits_patients_is_rewritten_one_that_does_not_is_kept(tmp_path):
    ids = lidc_like_ids()
    path = tmp_path / "splits.json"
    old = load_or_create_splits(path, ids, 5, 12345)  # written before the dataset had a grouping
    assert crossing_groups(old, LIDC_GROUP)
    grouped = load_or_create_splits(path, ids, 5, 12345, LIDC_GROUP)
    assert grouped == make_splits(ids, 5, 12345, group=LIDC_GROUP) and json.loads(path.read_text()) == grouped
    assert load_or_create_splits(path, ids, 5, 999, LIDC_GROUP) == grouped, "a group-disjoint file is reused"
    assert load_or_create_splits(path, ids, 5, 12345) == grouped, "and stays valid without a grouping"


def test_fold_cases_uses_train_split_group(tmp_path):
    ids = lidc_like_ids()
    config = TrainConfig(fold=2, split_group=LIDC_GROUP)
    train, val, kind = fold_cases(tmp_path, ids, config)
    patients = case_groups(ids, LIDC_GROUP)
    assert kind == "held-out fold 2" and not {patients[c] for c in train} & {patients[c] for c in val}
    assert TrainConfig().split_group is None


def test_the_lidc_config_groups_nodules_by_patient():
    from pathlib import Path

    from medseg.config.loader import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "lidc.yaml", [])
    assert case_groups(["LIDC-IDRI-0012_R_10", "LIDC-IDRI-0012_R_2"], config.train.split_group) == {
        "LIDC-IDRI-0012_R_10": "LIDC-IDRI-0012", "LIDC-IDRI-0012_R_2": "LIDC-IDRI-0012"}

"""Label names of a mask from JSON files in the shapes MSD, nnU-Net, TotalSegmentator and medseg use."""

from __future__ import annotations

import json

import pytest

from medseg.errors import InputError
from medseg.io.label_names import labels_for_mask, parse_label_names


@pytest.mark.parametrize(
    "data",
    [
        {"1": "liver", "2": "tumor"},  # index -> name
        {"background": 0, "liver": 1, "tumor": [2]},  # nnU-Net v2
        {"liver": {"index": 1, "voxels": 3}, "tumor": {"index": 2, "voxels": 0}},  # medseg sidecar section
        {"name": "x", "labels": {"0": "background", "1": "liver", "2": "tumor"}},  # MSD dataset.json
    ],
)
def test_every_shape_gives_the_same_names(data):
    names = parse_label_names(data, "labels.json")
    assert {k: v for k, v in names.items() if k} == {1: "liver", 2: "tumor"}


def test_region_labels_and_non_mappings_are_refused():
    with pytest.raises(InputError, match="no single integer index"):
        parse_label_names({"whole_tumor": [1, 2, 3]}, "dataset.json")
    with pytest.raises(InputError, match="JSON mapping"):
        parse_label_names(["liver"], "labels.json")


def test_sidecar_beside_the_mask_gives_names_and_model(tmp_path):
    (tmp_path / "case.json").write_text(json.dumps({"labels": {"liver": {"index": 1}}, "model": {"id": "abc", "name": "dynunet"}}))
    names, model = labels_for_mask(tmp_path / "case.nii.gz")
    assert names == {1: "liver"} and model["id"] == "abc"
    (tmp_path / "names.json").write_text(json.dumps({"1": "hepar"}))
    names, model = labels_for_mask(tmp_path / "case.nii.gz", tmp_path / "names.json")
    assert names == {1: "hepar"} and model["id"] == "abc"
    assert labels_for_mask(tmp_path / "other.nii.gz") == (None, None)

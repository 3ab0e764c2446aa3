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


BRATS_2015_REGIONS = {"background": 0, "whole tumor": [1, 2, 3, 4], "tumor core": [1, 3, 4], "enhancing tumor": [4]}


def test_region_dataset_json_names_each_value_by_its_recorded_name():
    """`medseg dataset import` records the original names: each value gets its own, never a region's (a union's)."""
    data = {"labels": BRATS_2015_REGIONS, "regions_class_order": [2, 1, 4],
            "medseg_import": {"class_names": {"0": "background", "1": "necrosis", "2": "oedema", "3": "non-enhancing tumor", "4": "enhancing tumor"}}}
    assert parse_label_names(data, "dataset.json") == {0: "background", 1: "necrosis", 2: "oedema", 3: "non-enhancing tumor", 4: "enhancing tumor"}


def test_region_labels_without_recorded_names_use_single_value_regions_then_label_value():
    """nnU-Net's own BraTS dataset.json: the single-value region names its value; the rest are label_<value>, as training names them."""
    regions = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}
    assert parse_label_names(regions, "labels.json") == {0: "background", 1: "label_1", 2: "label_2", 3: "enhancing tumor"}


def test_region_labels_name_values_as_the_trained_model_does(tmp_path):
    """The sidecar of a model trained on the dataset names values from the dataset's labels: convert must agree."""
    from medseg.data.dataset import load_dataset
    from medseg.data.importer import dataset_json, resolve_spec

    data = dataset_json(resolve_spec(preset="brats2023"), [], tmp_path / "source", tmp_path / "brats")
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    assert parse_label_names(data, "dataset.json") == load_dataset(tmp_path).labels == {
        0: "background", 1: "necrotic tumor core", 2: "oedema", 3: "enhancing tumor"}


def test_bad_region_labels_and_non_mappings_are_refused():
    with pytest.raises(InputError, match="region label 'whole tumor' must be a list of integers"):
        parse_label_names({"whole tumor": [1, 2, "x"]}, "dataset.json")
    with pytest.raises(InputError, match="no single integer index"):
        parse_label_names({"liver": "big"}, "labels.json")
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

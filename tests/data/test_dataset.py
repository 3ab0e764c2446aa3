"""Raw dataset layouts: MSD, MSD 4D, nnU-Net v2 (incl. regions), auto-detection and junk files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.data.dataset import detect_format, load_dataset, modality_of, read_case_images, read_case_label
from medseg.errors import InputError
from tests.data._builders import make_msd, make_msd_4d, make_nnunet, phantom, ras_affine, save_nifti


def test_msd_layout_is_detected_and_described(tmp_path):
    root = make_msd(tmp_path / "ds", cases=3)
    (root / "imagesTr" / "._case_000.nii.gz").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
    description = load_dataset(root)
    assert detect_format(root) == "msd"
    assert description.name == "TinyCT"
    assert description.channel_names == ["CT"] and description.modalities == ["CT"]
    assert description.labels == {0: "background", 1: "organ", 2: "tumor"}
    assert [case.case_id for case in description.cases] == ["case_000", "case_001", "case_002"]
    case = description.cases[0]
    assert case.images == [root / "imagesTr" / "case_000.nii.gz"]
    assert case.label == root / "labelsTr" / "case_000.nii.gz"


def test_msd_without_training_list_ignores_mac_junk(tmp_path):
    root = make_msd(tmp_path / "ds", cases=2, training_list=False)
    (root / "imagesTr" / "._case_000.nii.gz").write_bytes(b"junk")
    (root / "labelsTr" / "._case_000.nii.gz").write_bytes(b"junk")
    (root / "imagesTr" / ".DS_Store").write_bytes(b"junk")
    description = load_dataset(root)
    assert [case.case_id for case in description.cases] == ["case_000", "case_001"]
    assert description.cases[0].label.name == "case_000.nii.gz"


def test_msd_4d_multichannel_file_is_split_into_channels(tmp_path):
    root = make_msd_4d(tmp_path / "brain")
    description = load_dataset(root)
    assert description.channel_names == ["FLAIR", "T1w"] and description.modalities == ["MR", "MR"]
    case = description.cases[0]
    assert case.multichannel_file and len(case.images) == 1
    channels = read_case_images(case, description.num_channels)
    assert len(channels) == 2
    assert np.allclose(channels[1].array, 2.0 * channels[0].array)
    assert np.allclose(channels[0].affine, channels[1].affine)


def test_nnunet_v2_layout_with_channels_and_regions(tmp_path):
    root = make_nnunet(tmp_path / "Dataset001_Tiny", cases=2)
    assert detect_format(root) == "nnunet"
    description = load_dataset(root)
    assert description.format == "nnunet"
    assert description.channel_names == ["T2", "ADC"]
    assert description.labels == {0: "background", 1: "peripheral", 2: "transition"}
    assert description.regions == {"whole": (1, 2), "peripheral": (1,), "transition": (2,)}  # nnU-Net: every entry is a region
    assert list(description.regions) == ["whole", "peripheral", "transition"]  # declared order: regions_class_order follows it
    assert description.regions_class_order == [2, 1, 2]
    assert description.label_values == [0, 1, 2]
    assert [case.case_id for case in description.cases] == ["pro_000", "pro_001"]
    assert [path.name for path in description.cases[0].images] == ["pro_000_0000.nii.gz", "pro_000_0001.nii.gz"]
    assert description.cases[0].label.name == "pro_000.nii.gz"
    assert [case.case_id for case in description.test_cases] == ["pro_900"]
    assert description.test_cases[0].label is None
    assert len(read_case_images(description.cases[0], 2)) == 2


def test_nnunet_v1_style_msd_json_with_channel_suffixed_files(tmp_path):
    root = tmp_path / "Task05"
    image, label = phantom((12, 10, 8), "MR")
    for channel in range(2):
        save_nifti(image + channel, ras_affine(), root / "imagesTr" / f"pro_001_{channel:04d}.nii.gz")
    save_nifti(label, ras_affine(), root / "labelsTr" / "pro_001.nii.gz")
    data = {"name": "v1", "modality": {"0": "T2", "1": "ADC"}, "labels": {"0": "bg", "1": "a", "2": "b"},
            "training": [{"image": "./imagesTr/pro_001.nii.gz", "label": "./labelsTr/pro_001.nii.gz"}]}
    (root / "dataset.json").write_text(json.dumps(data))
    case = load_dataset(root).cases[0]
    assert [path.name for path in case.images] == ["pro_001_0000.nii.gz", "pro_001_0001.nii.gz"]
    assert not case.multichannel_file


def test_dicom_series_folder_counts_as_a_case_image(tmp_path):
    root = make_msd(tmp_path / "ds", cases=1, training_list=False)
    series = root / "imagesTr" / "case_dcm"
    series.mkdir()
    (series / "slice_000.dcm").write_bytes(b"not really dicom")
    description = load_dataset(root)
    case = description.case("case_dcm")
    assert case.images == [series]
    assert case.label == root / "labelsTr" / "case_dcm.nii.gz"  # reported missing by check, not here


def test_labels_are_read_as_integer_maps_even_when_stored_as_float(tmp_path):
    root = make_msd(tmp_path / "ds", cases=1)
    path = root / "labelsTr" / "case_000.nii.gz"
    _, label = phantom()
    save_nifti(label.astype(np.float32), ras_affine(), path)
    volume = read_case_label(load_dataset(root).cases[0])
    assert volume.role == "label" and np.issubdtype(volume.array.dtype, np.integer)
    assert set(np.unique(volume.array)) == {0, 1, 2}


@pytest.mark.parametrize(
    "content, problem",
    [(None, "no dataset.json"), ("{not json", "not valid JSON"), (json.dumps({"name": "x"}), "neither 'modality'")],
)
def test_bad_dataset_json_is_an_input_error(tmp_path, content, problem):
    root = tmp_path / "ds"
    root.mkdir()
    if content is not None:
        (root / "dataset.json").write_text(content)
    with pytest.raises(InputError, match=problem):
        load_dataset(root)


@pytest.mark.parametrize("name, expected", [("CT", "CT"), ("MRI", "MR"), ("T2", "MR"), ("FLAIR", "MR"), ("t1gd", "MR"), ("ADC", "MR"), ("noNorm", "other"), ("PET", "other")])
def test_modality_from_channel_name(name, expected):
    assert modality_of(name) == expected


def _nnunet_json(root, labels, order=None):
    data = {"channel_names": {"0": "T1"}, "labels": labels, "file_ending": ".nii.gz"}
    if order is not None:
        data["regions_class_order"] = order
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(data))
    return root


def test_nnunet_regions_need_one_class_per_region(tmp_path):
    labels = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}
    with pytest.raises(InputError, match="3 region"):
        load_dataset(_nnunet_json(tmp_path / "a", labels, [1, 2]))
    with pytest.raises(InputError, match="regions_class_order"):
        load_dataset(_nnunet_json(tmp_path / "b", labels))
    description = load_dataset(_nnunet_json(tmp_path / "c", labels, [1, 2, 3]))
    assert description.regions == {"whole tumor": (1, 2, 3), "tumor core": (2, 3), "enhancing tumor": (3,)}


def test_single_value_lists_alone_are_plain_labels(tmp_path):
    description = load_dataset(_nnunet_json(tmp_path / "a", {"background": 0, "liver": [1], "tumor": 2}))
    assert not description.has_regions and description.labels == {0: "background", 1: "liver", 2: "tumor"}

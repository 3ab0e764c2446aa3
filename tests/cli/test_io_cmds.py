"""`medseg convert --to dicom-seg`: names and model from the sidecar, one-line errors, nothing partial."""

from __future__ import annotations

import json

import highdicom as hd
import numpy as np
import pytest

from medseg.io import Volume, write_volume
from medseg.io.dicom_write import write_dicom_series
from tests.io.helpers import oblique_affine



@pytest.fixture
def series_and_mask(tmp_path, rng):
    image = Volume(rng.integers(0, 100, size=(12, 10, 6)).astype(np.int16), oblique_affine())
    write_dicom_series(image, tmp_path / "series")
    labels = np.zeros(image.shape, np.uint8)
    labels[2:6, 3:7, 1:4] = 1
    labels[7:9, 1:3, 4:6] = 2
    write_volume(image.with_array(labels, role="label"), tmp_path / "case.nii.gz")
    sidecar = {"labels": {"liver": {"index": 1}, "tumor": {"index": 2}, "spleen": {"index": 3}},
               "model": {"id": "feedc0ffee12", "name": "dynunet", "folds": [0, 1]}}
    (tmp_path / "case.json").write_text(json.dumps(sidecar))
    return tmp_path


def test_convert_to_dicom_seg_uses_the_inference_sidecar(series_and_mask, run_cli):
    root = series_and_mask
    result = run_cli("convert", root / "case.nii.gz", root / "case_seg.dcm", "--to", "dicom-seg", "--reference", root / "series")
    assert result.code == 0, result.err
    assert "3 segment(s)" in result.out and "spleen" in result.out  # the empty label is a segment, and noted
    seg = hd.seg.segread(root / "case_seg.dcm")
    assert [seg.get_segment_description(n).SegmentLabel for n in seg.segment_numbers] == ["liver", "tumor", "spleen"]
    algorithm = seg.get_segment_description(1).SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "medseg dynunet" and algorithm.AlgorithmVersion == "feedc0ffee12"


def test_convert_to_dicom_seg_bad_input_is_one_line(series_and_mask, run_cli, rng):
    root = series_and_mask
    missing = run_cli("convert", root / "case.nii.gz", root / "x.dcm", "--to", "dicom-seg")
    assert missing.code == 2 and "needs --reference" in missing.err
    other = Volume(np.ones((12, 10, 5), np.uint8), oblique_affine(), "label")
    write_volume(other, root / "other.nii.gz")
    (root / "names.json").write_text(json.dumps({"1": "liver"}))
    wrong = run_cli("convert", root / "other.nii.gz", root / "x.dcm", "--to", "dicom-seg", "--reference", root / "series",
                    "--labels", root / "names.json")
    assert wrong.code == 2 and "does not match the DICOM series" in wrong.err
    assert len(wrong.err.strip().splitlines()) == 1 and "Traceback" not in wrong.err
    target = run_cli("convert", root / "case.nii.gz", root / "x.dcm", "--to", "rtstruct")
    assert target.code == 2 and "dicom-seg" in target.err
    assert not list(root.glob("x.dcm*")) and not list(root.glob(".x.dcm*"))


def test_convert_to_dicom_seg_names_values_from_a_region_dataset_json(series_and_mask, run_cli):
    """The BraTS dataset.json `medseg dataset import` writes (regions: lists of values) names the mask's values (issue #26.9)."""
    from medseg.data.importer import dataset_json, resolve_spec

    root = series_and_mask
    data = dataset_json(resolve_spec(preset="brats2021"), [], root / "source", root / "brats")
    assert data["labels"]["whole tumor"] == [1, 2, 4]  # the region form that used to be refused
    (root / "dataset.json").write_text(json.dumps(data))
    mask = Volume(np.zeros((12, 10, 6), np.uint8), oblique_affine(), "label")
    mask.array[2:6, 3:7, 1:4], mask.array[7:9, 1:3, 4:6], mask.array[3:5, 4:6, 2:3] = 2, 1, 4  # oedema, necrosis, enhancing
    write_volume(mask, root / "brats_case.nii.gz")
    result = run_cli("convert", root / "brats_case.nii.gz", root / "brats_seg.dcm", "--to", "dicom-seg", "--reference", root / "series",
                     "--labels", root / "dataset.json")
    assert result.code == 0, result.err
    seg = hd.seg.segread(root / "brats_seg.dcm")
    assert [seg.get_segment_description(n).SegmentLabel for n in seg.segment_numbers] == ["necrotic tumor core", "oedema", "enhancing tumor"]

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
    assert "2 segment(s)" in result.out and "spleen" in result.out  # the empty label is noted
    seg = hd.seg.segread(root / "case_seg.dcm")
    assert [seg.get_segment_description(n).SegmentLabel for n in seg.segment_numbers] == ["liver", "tumor"]
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

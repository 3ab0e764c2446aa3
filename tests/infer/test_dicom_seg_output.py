"""`medseg infer --dicom-seg` on a DICOM series: one SEG beside the mask, written before the sidecar, read back equal."""

from __future__ import annotations

import json

import numpy as np
import pytest

highdicom = pytest.importorskip("highdicom")

from medseg.infer import InferConfig, infer  # noqa: E402
from medseg.io import read_volume  # noqa: E402
from medseg.io.dicom_write import write_dicom_series  # noqa: E402


def test_dicom_series_in_gives_a_seg_out(trained, segmenter, tmp_path):
    image = read_volume(trained["dataset"] / "imagesTs" / "case_005.nii.gz")
    write_dicom_series(image, tmp_path / "ct_dicom", modality="CT")
    config = InferConfig(threads=1, dicom_seg=True)
    segmenter.config = config
    try:
        infer(segmenter.model, tmp_path / "ct_dicom", tmp_path / "out", config, segmenter=segmenter)
    finally:
        segmenter.config = InferConfig(threads=1)
    seg_path = tmp_path / "out" / "ct_dicom_seg.dcm"
    sidecar = json.loads((tmp_path / "out" / "ct_dicom.json").read_text())
    assert seg_path.is_file() and sidecar["outputs"]["dicom_seg"] == "ct_dicom_seg.dcm"
    mask = read_volume(tmp_path / "out" / "ct_dicom.nii.gz", role="label")
    seg = highdicom.seg.segread(seg_path)
    named = [k for k in sorted(segmenter.model.labels) if k]  # every label of the model, present in this case or not
    assert list(seg.segment_numbers) == list(range(1, len(named) + 1))
    assert [seg.get_segment_description(n).segment_label for n in seg.segment_numbers] == [segmenter.model.labels[k] for k in named]
    present = {int(v) for v in np.unique(mask.array) if v}
    assert present and present <= set(named)

"""`medseg infer` on a gantry-tilted DICOM series: the mask lies on the resampled grid and the sidecar says so;
the DICOM-SEG goes back onto the tilted slices as acquired."""

from __future__ import annotations

import json
import math

import highdicom as hd
import numpy as np

from medseg.infer import InferConfig, infer
from medseg.io import Volume, geometry, read_volume
from medseg.io.dicom_grid import sample_source_frames
from medseg.io.dicom_seg import load_reference_series
from medseg.io.dicom_write import write_dicom_series
from tests.io.test_dicom_seg import assert_frames_reference_their_slices


def test_tilted_series_mask_is_on_the_corrected_grid_and_the_sidecar_warns(trained, segmenter, tmp_path):
    image = read_volume(trained["dataset"] / "imagesTs" / "case_005.nii.gz")
    column = image.affine[:3, 1] / np.linalg.norm(image.affine[:3, 1])
    ks = np.arange(image.shape[2])[:, None]
    origins = image.affine[:3, 3] + ks * image.affine[:3, 2] + ks * image.spacing[2] * math.tan(math.radians(8.0)) * column
    write_dicom_series(Volume(image.array, image.affine), tmp_path / "tilted", modality="CT", slice_origins=origins)
    segmenter.config = InferConfig(threads=1, dicom_seg=True)
    infer(segmenter.model, tmp_path / "tilted", tmp_path / "out", segmenter.config, segmenter=segmenter)
    sidecar = json.loads((tmp_path / "out" / "tilted.json").read_text())
    assert any("gantry tilt of 8.00 deg" in warning for warning in sidecar["warnings"])
    mask = read_volume(tmp_path / "out" / "tilted.nii.gz", role="label")
    converted = read_volume(tmp_path / "tilted")
    assert mask.same_grid(converted) and geometry.is_orthogonal(mask.affine, tol=1e-5)
    assert sidecar["input"]["shape"] == list(converted.shape) and converted.shape[1] > image.shape[1]
    # DICOM-SEG: one frame per tilted source slice, at its own position, holding the mask sampled there
    files = sorted((tmp_path / "tilted").glob("*.dcm"))
    seg = hd.seg.segread(tmp_path / "out" / "tilted_seg.dcm")
    assert sidecar["outputs"]["dicom_seg"] == "tilted_seg.dcm"
    assert_frames_reference_their_slices(seg, files)
    reference = load_reference_series(tmp_path / "tilted")
    expected = sample_source_frames(mask.array, reference.grid, image.shape[0], image.shape[1])
    uids = [str(ds.SOPInstanceUID) for ds in reference.datasets]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True, relabel=False,
                                                skip_overlap_checks=True, ignore_spatial_locations=True)
    values = np.asarray([0, *sorted(k for k in segmenter.model.labels if k)])  # segment k is the model's k-th label
    assert np.array_equal(values[pixels], expected) and expected.any()

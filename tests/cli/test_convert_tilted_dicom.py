"""`medseg convert` on a gantry-tilted DICOM series: an orthogonal NIfTI covering the source, at the same world points."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np

from medseg.io import Volume, geometry
from tests.io.helpers import SHAPE, STEP, assert_covers, ramp, sample, storage_step, write_series


def _tilted(folder, values=None, modality="MR"):
    along = STEP * np.arange(SHAPE[2])
    return write_series(folder, along, along * math.tan(math.radians(11.0)), values=values, modality=modality)


def _load(path) -> Volume:
    image = nib.load(path)
    return Volume(np.asarray(image.dataobj), image.affine)


def test_convert_tilted_series_gives_an_orthogonal_nifti_at_the_source_world_points(tmp_path, run_cli):
    centres, _ = _tilted(tmp_path / "series")
    result = run_cli("convert", tmp_path / "series", tmp_path / "ct.nii.gz")
    assert result.code == 0, result.err
    assert "gantry tilt of 11.00 deg" in result.err  # the WARNING says what was done
    converted = _load(tmp_path / "ct.nii.gz")
    assert geometry.is_orthogonal(converted.affine, tol=1e-5)
    assert_covers(converted, centres)
    interior = centres[1:-1, 1:-1]
    assert np.abs(sample(converted, interior) - ramp(interior).ravel()).max() <= storage_step(tmp_path / "series")


def test_label_series_converts_with_nearest_on_the_image_grid(tmp_path, run_cli):
    centres, image = _tilted(tmp_path / "image")
    labels = lambda points: (ramp(points) > np.median(image)).astype(np.int16)  # noqa: E731
    _, source_labels = _tilted(tmp_path / "labels", values=labels, modality="CT")
    assert run_cli("convert", tmp_path / "image", tmp_path / "image.nii.gz").code == 0
    result = run_cli("convert", tmp_path / "labels", tmp_path / "labels.nii.gz", "--label")
    assert result.code == 0, result.err
    converted_image, converted_labels = _load(tmp_path / "image.nii.gz"), _load(tmp_path / "labels.nii.gz")
    assert converted_labels.same_grid(converted_image)  # same positions, same tilt: one grid, voxel for voxel
    assert converted_labels.array.dtype == np.uint8 and set(np.unique(converted_labels.array)) == {0, 1}
    # The label sits where the image says it should: label 1 exactly on the voxels whose (resampled) value is above
    # the threshold, except on the one-voxel boundary where nearest and linear may round differently.
    above = converted_image.array > np.median(image)
    agree = (converted_labels.array == 1) == above
    assert agree.mean() > 0.97
    assert (sample(converted_labels, centres, order=0).reshape(source_labels.shape) == source_labels).mean() > 0.97

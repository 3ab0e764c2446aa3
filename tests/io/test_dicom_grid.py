"""Gantry-tilted and unevenly spaced DICOM series: resampled onto a regular orthogonal grid at the same world points.

Each series is synthetic: slice k's first voxel is placed explicitly (tilt: sideways drift along the column
direction, as a tilted CT gantry gives; uneven: irregular steps along the normal), and every source voxel holds a
linear ramp of its own world position. Linear interpolation reproduces a linear ramp exactly, so the converted
volume, sampled at the source voxel centres through its own affine, must give back the source values up to the
DICOM storage quantisation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.errors import InputError
from medseg.io import geometry
from medseg.io.dicom import read_dicom_series
from medseg.io.readers import read_volume
from tests.io.helpers import PIXEL, RAMP, SHAPE, STEP, assert_covers, base_affine, ramp, sample, storage_step, write_series


def test_tilted_series_is_resampled_onto_an_orthogonal_grid_at_the_same_world_points(tmp_path):
    tilt = 14.0
    along = STEP * np.arange(SHAPE[2])
    centres, source = write_series(tmp_path, along, along * math.tan(math.radians(tilt)), GantryDetectorTilt="14")
    volume = read_dicom_series(tmp_path)
    assert geometry.is_orthogonal(volume.affine)
    assert np.allclose(volume.spacing, [*PIXEL, STEP], atol=1e-5)
    assert np.allclose(volume.direction, base_affine()[:3, :3] / np.asarray([*PIXEL, STEP]), atol=1e-5)  # in-plane axes kept
    assert volume.shape[0] == SHAPE[0] and volume.shape[1] > SHAPE[1] and volume.shape[2] == SHAPE[2]
    assert_covers(volume, centres)
    [warning] = volume.meta["warnings"]
    assert f"gantry tilt of {tilt:.2f} deg" in warning and "GantryDetectorTilt 14 deg" in warning
    assert volume.meta["geometry_correction"]["gantry_tilt_deg"] == pytest.approx(tilt, abs=1e-3)
    interior = centres[1:-1, 1:-1]  # edge voxels have no neighbour beyond them to interpolate with
    error = np.abs(sample(volume, interior) - ramp(interior).ravel()).max()
    print(f"tilt {tilt} deg: max |interpolated - source ramp| = {error:.3g} (storage step {storage_step(tmp_path):.3g})")
    assert error <= storage_step(tmp_path)
    # Edge voxels too, through the nearest output voxel: it lies within half a pixel in-plane, and holds data.
    nearest = np.abs(sample(volume, centres, order=0) - source.ravel()).max()
    assert nearest <= np.linalg.norm(RAMP) * 0.5 * np.hypot(*PIXEL) + storage_step(tmp_path)


def test_tilt_uncovered_corners_get_the_darkest_value_not_data(tmp_path):
    along = STEP * np.arange(SHAPE[2])
    drift_px = along[-1] * math.tan(math.radians(20.0)) / PIXEL[1]  # 8.09 rows
    write_series(tmp_path, along, along * math.tan(math.radians(20.0)))
    volume = read_dicom_series(tmp_path)
    darkest = volume.array.min()
    assert volume.shape[1] == SHAPE[1] + math.ceil(drift_px)
    uncovered = math.floor(drift_px - 0.5)  # rows more than half a pixel beyond the last slice's first row
    first, last = volume.array[:, :, 0], volume.array[:, :, -1]
    assert (first[:, SHAPE[1]:] == darkest).all() and (last[:, :uncovered] == darkest).all()
    # between them, data: the ramp's minimum is one voxel of the source, the rest lies above it
    assert (first[:, : SHAPE[1]] > darkest).mean() > 0.99 and (last[:, uncovered + 1: -1] > darkest).mean() > 0.99


def test_uneven_spacing_is_resampled_to_the_smallest_step(tmp_path, caplog):
    along = np.array([0.0, 2.5, 5.0, 8.0, 10.5, 12.0, 15.2, 17.7, 20.2])  # smallest gap 1.5 mm
    centres, source = write_series(tmp_path, along, np.zeros_like(along))
    volume = read_dicom_series(tmp_path)
    slices = math.ceil(20.2 / 1.5) + 1
    assert volume.shape == (SHAPE[0], SHAPE[1], slices)
    assert volume.spacing[2] == pytest.approx(20.2 / (slices - 1)) and volume.spacing[2] <= 1.5
    assert geometry.is_orthogonal(volume.affine)
    assert_covers(volume, centres)
    error = np.abs(sample(volume, centres) - ramp(centres).ravel()).max()  # no in-plane shift: edges are exact too
    print(f"uneven spacing: max |interpolated - source ramp| = {error:.3g}")
    assert error <= storage_step(tmp_path)
    [warning] = volume.meta["warnings"]
    assert "variable slice spacing (1.5 to 3.2 mm" in warning and f"regular {volume.spacing[2]:.4g} mm" in warning
    assert any("variable slice spacing" in record.getMessage() and record.levelname == "WARNING" for record in caplog.records)


def test_slice_count_is_capped_at_twice_the_source(tmp_path):
    along = np.array([0.0, 0.2, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0])  # one 0.2 mm gap would ask for 176 slices
    write_series(tmp_path, along, np.zeros_like(along))
    volume = read_dicom_series(tmp_path)
    assert volume.shape[2] == 2 * SHAPE[2] and volume.spacing[2] == pytest.approx(35.0 / (2 * SHAPE[2] - 1))


def test_tilt_and_uneven_spacing_together(tmp_path):
    along = np.array([0.0, 2.0, 4.5, 7.0, 9.0, 11.5, 14.0, 16.5, 19.0])
    centres, _ = write_series(tmp_path, along, along * math.tan(math.radians(-9.0)))
    volume = read_dicom_series(tmp_path)
    assert geometry.is_orthogonal(volume.affine) and len(volume.meta["warnings"]) == 2
    assert_covers(volume, centres)
    interior = centres[1:-1, 1:-1]
    assert np.abs(sample(volume, interior) - ramp(interior).ravel()).max() <= storage_step(tmp_path)


def test_integer_ct_stays_integer_within_half_a_unit(tmp_path):
    along = STEP * np.arange(SHAPE[2])
    centres, _ = write_series(tmp_path, along, along * 0.3, values=lambda c: np.rint(ramp(c)).astype(np.int16), modality="CT")
    volume = read_dicom_series(tmp_path)
    assert volume.array.dtype == np.int16
    interior = centres[1:-1, 1:-1]
    assert np.abs(sample(volume, interior) - ramp(interior).ravel()).max() <= 1.0 + 1e-6  # source and output rounding


def test_label_series_uses_nearest_and_keeps_world_alignment(tmp_path):
    along = STEP * np.arange(SHAPE[2])
    band = 6.0  # mm of ramp per label band

    def labels(points):
        return (np.floor((points @ RAMP) / (band * np.linalg.norm(RAMP))) % 4).astype(np.int16)

    centres, source = write_series(tmp_path, along, along * math.tan(math.radians(12.0)), values=labels, modality="CT")
    mask = read_volume(tmp_path, role="label")
    assert mask.role == "label" and set(np.unique(mask.array)) <= set(np.unique(source))
    got = sample(mask, centres, order=0).reshape(source.shape)
    # A voxel may only disagree when a band boundary lies within one voxel diagonal of its centre.
    distance = (centres @ RAMP) / np.linalg.norm(RAMP)
    to_boundary = np.abs(distance / band - np.rint(distance / band)) * band
    near = to_boundary < np.linalg.norm([*PIXEL, STEP])
    assert (got == source)[~near].all() and (got == source).mean() > 0.9


def test_identical_duplicate_file_is_dropped_with_a_note(tmp_path):
    import shutil

    along = STEP * np.arange(SHAPE[2])
    write_series(tmp_path, along, np.zeros_like(along))
    shutil.copy(tmp_path / "slice_0003.dcm", tmp_path / "copy_of_3.dcm")
    volume = read_dicom_series(tmp_path)
    assert volume.shape == SHAPE and volume.meta["slice_count"] == SHAPE[2]
    [note] = volume.meta["warnings"]
    assert "dropped 1 duplicate file(s)" in note and "copy_of_3.dcm" in note and "slice_0003.dcm" in note


def test_positions_far_off_one_stack_are_refused_before_allocating(tmp_path):
    along = STEP * np.arange(SHAPE[2])
    write_series(tmp_path, along, along * 400.0)  # 89.9 deg: a grid covering this would be huge
    with pytest.raises(InputError, match=r"do not form one stack: a regular grid covering them would hold \d+ times"):
        read_dicom_series(tmp_path)


def test_sideways_jitter_below_the_tilt_tolerance_neither_widens_nor_shifts_uneven_slices(tmp_path):
    along = np.array([0.0, 2.5, 5.0, 8.0, 10.5, 12.0, 15.2, 17.7, 20.2])
    jitter = np.random.default_rng(3).uniform(-0.02, 0.02, along.size)  # mm; tolerance is 5% of a pixel (0.035 mm)
    _, source = write_series(tmp_path, along, jitter)
    volume = read_dicom_series(tmp_path)
    assert volume.shape[:2] == SHAPE[:2] and "gantry tilt" not in " ".join(volume.meta["warnings"])
    # slice 0 is copied, not shifted by the jitter: equal to the source up to the storage step
    assert np.abs(volume.array[:, :, 0] - source[:, :, 0]).max() <= storage_step(tmp_path) / 2 + 1e-4

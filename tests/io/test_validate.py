"""The shared read-time checks: size limit, declared size against the file, voxel types, geometry, label range."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import ConfigError, InputError
from medseg.io import Volume, read_volume
from medseg.io.readers import to_label_array
from medseg.io.validate import (
    DEFAULT_MAX_VOXELS,
    check_declared_size,
    max_voxels,
    validate_volume,
    voxel_type_problem,
)
from medseg.io.volume import MAX_LABEL, label_dtype


def test_max_voxels_default_and_override(monkeypatch):
    monkeypatch.delenv("MEDSEG_MAX_VOXELS", raising=False)
    assert max_voxels() == DEFAULT_MAX_VOXELS
    monkeypatch.setenv("MEDSEG_MAX_VOXELS", "3e9")
    assert max_voxels() == 3_000_000_000
    monkeypatch.setenv("MEDSEG_MAX_VOXELS", "lots")
    with pytest.raises(ConfigError, match="MEDSEG_MAX_VOXELS"):
        max_voxels()


def test_declared_size_checks(monkeypatch):
    monkeypatch.setenv("MEDSEG_MAX_VOXELS", "1000")
    assert check_declared_size("a.nii", (10, 10, 10), 2, available_bytes=2000) == 2000
    with pytest.raises(InputError, match="holds only"):
        check_declared_size("a.nii", (10, 10, 10), 2, available_bytes=1999)
    with pytest.raises(InputError, match="compressed data can hold"):
        check_declared_size("a.nii.gz", (10, 10, 10), 2, deflate_bytes=1)
    with pytest.raises(InputError, match="MEDSEG_MAX_VOXELS=1001"):
        check_declared_size("a.nii", (7, 11, 13), 1)
    with pytest.raises(InputError, match="at least one voxel"):
        check_declared_size("a.nii", (10, 0, 10), 1)


@pytest.mark.parametrize("dtype", [np.complex64, np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")]), object, "S4"])
def test_non_real_voxel_types_are_refused(dtype):
    assert voxel_type_problem(np.dtype(dtype)) is not None


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint32, np.int64, np.float16, np.float32, np.float64, bool])
def test_real_voxel_types_pass(dtype):
    assert voxel_type_problem(np.dtype(dtype)) is None


def _nan_affine() -> np.ndarray:
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    affine[1, 3] = np.nan
    return affine


@pytest.mark.parametrize(
    "affine,expected",
    [(_nan_affine(), "NaN/inf"),
     (np.diag([1.0, 0.0, 3.0, 1.0]), "axis 1 is 0"),
     (np.array([[1.0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0, 3, 0], [0, 0, 0, 1]]), "singular"),
     (np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]), "last row")],
)
def test_bad_geometry_is_refused(affine, expected):
    volume = Volume(np.zeros((2, 3, 4), np.int16), np.eye(4))
    volume.affine = affine
    with pytest.raises(InputError, match=expected):
        validate_volume(volume, "scan.nii")


def test_good_oblique_geometry_passes():
    from tests.io.helpers import oblique_affine

    validate_volume(Volume(np.zeros((2, 3, 4), np.int16), oblique_affine()), "scan.nii")


def test_label_range_is_checked_before_the_cast(tmp_path):
    labels = np.zeros((3, 3, 3), np.int64)
    labels[0, 0, 0] = 2**33 + 1  # uint32 would keep 1
    with pytest.raises(InputError, match="8589934593"):
        to_label_array(labels, "big.nii")
    labels[0, 0, 0] = MAX_LABEL
    assert to_label_array(labels, "ok.nii").dtype == np.uint32
    with pytest.raises(ValueError, match="uint32"):
        label_dtype(MAX_LABEL + 1)


def test_read_volume_label_refuses_values_above_uint32(tmp_path):
    labels = np.zeros((3, 3, 3), np.int64)
    labels[1, 1, 1] = 2**40
    path = tmp_path / "wide.nii.gz"
    nib.save(nib.Nifti1Image(labels, np.eye(4), dtype=np.int64), path)
    assert read_volume(path).array.max() == 2**40  # as an image the values stay exact
    with pytest.raises(InputError, match="above the largest label"):
        read_volume(path, role="label")

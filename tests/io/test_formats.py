"""NIfTI <-> NRRD <-> MHA round trips keep voxels and world geometry; label maps are checked."""

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import InputError
from medseg.io import read_volume, write_label_map, write_volume
from medseg.io.geometry import corner_points
from medseg.io.volume import Volume
from tests.io.helpers import oblique_affine, random_volume


def _max_world_error(a: Volume, b: Volume) -> float:
    return float(np.abs(corner_points(a.shape, a.affine) - corner_points(b.shape, b.affine)).max())


@pytest.mark.parametrize("chain", [(".nii.gz", ".nrrd", ".mha", ".nii.gz"), (".nrrd", ".nii", ".mhd", ".nrrd"), (".mha", ".nii.gz")])
@pytest.mark.parametrize("permutation,flips", [((0, 1, 2), (1, 1, 1)), ((2, 0, 1), (-1, 1, -1))])
def test_round_trip_chain_keeps_geometry(tmp_path, rng, chain, permutation, flips):
    original = random_volume(rng, affine=oblique_affine(permutation=permutation, flips=flips))
    current = original
    for step, suffix in enumerate(chain):
        path = tmp_path / f"step{step}{suffix}"
        write_volume(current, path)
        current = read_volume(path)
        assert current.shape == original.shape
        np.testing.assert_array_equal(current.array, original.array)
        assert _max_world_error(current, original) < 1e-5, f"geometry drifted after {suffix}"
    assert current.orientation == original.orientation


def test_nifti_keeps_source_qform_and_sform_codes(tmp_path, rng):
    affine = oblique_affine()
    image = nib.Nifti1Image(rng.integers(0, 5, (8, 9, 10)).astype(np.int16), affine)
    image.set_sform(affine, code=2)
    image.set_qform(affine, code=0)
    source = tmp_path / "source.nii.gz"
    nib.save(image, source)
    volume = read_volume(source)
    out = tmp_path / "mask.nii.gz"
    write_label_map((volume.array > 2).astype(np.uint8), volume, out)
    written = nib.load(out)
    assert int(written.header["sform_code"]) == 2 and int(written.header["qform_code"]) == 0
    np.testing.assert_allclose(written.affine, nib.load(source).affine, atol=1e-6)
    assert written.get_data_dtype() == np.uint8


def test_float_label_map_is_rounded(tmp_path):
    array = np.zeros((4, 4, 4), np.float32)
    array[1:3, 1:3, 1:3] = 2.0000001
    array[0, 0, 0] = 0.9999999
    path = tmp_path / "float_label.nii.gz"
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    label = read_volume(path, role="label")
    assert label.role == "label" and label.array.dtype == np.uint8
    assert set(np.unique(label.array)) == {0, 1, 2}


@pytest.mark.parametrize("bad,expected", [(np.nan, "NaN/inf"), (np.inf, "NaN/inf"), (1.5, "non-integer"), (-1.0, "negative")])
def test_bad_label_values_are_refused(tmp_path, bad, expected):
    array = np.zeros((4, 4, 4), np.float32)
    array[2, 2, 2] = bad
    path = tmp_path / "bad_label.nii.gz"
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    with pytest.raises(InputError, match=expected) as info:
        read_volume(path, role="label")
    assert "bad_label.nii.gz" in str(info.value)


def test_write_label_map_refuses_wrong_shape(tmp_path, rng):
    reference = random_volume(rng)
    with pytest.raises(InputError, match="does not match"):
        write_label_map(np.zeros((2, 2, 2), np.uint8), reference, tmp_path / "m.nii.gz")
    assert not list(tmp_path.iterdir())


def test_4d_requires_opt_in(tmp_path, rng):
    path = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(rng.normal(size=(5, 6, 7, 2)).astype(np.float32), np.eye(4)), path)
    with pytest.raises(InputError, match="4D"):
        read_volume(path)
    volume = read_volume(path, allow_channels=True)
    assert volume.channels == 2 and volume.shape == (5, 6, 7)


def test_singleton_4th_axis_is_3d(tmp_path, rng):
    path = tmp_path / "x.nii"
    nib.save(nib.Nifti1Image(rng.normal(size=(5, 6, 7, 1)).astype(np.float32), np.eye(4)), path)
    assert read_volume(path).array.shape == (5, 6, 7)


def test_big_endian_nifti_becomes_native(tmp_path):
    array = np.arange(60, dtype=">i2").reshape(3, 4, 5)
    path = tmp_path / "be.nii"
    image = nib.Nifti1Image(array, np.diag([-2, 2, 2, 1]))
    image.set_data_dtype(">i2")
    nib.save(image, path)
    volume = read_volume(path)
    assert volume.array.dtype.isnative
    np.testing.assert_array_equal(volume.array, array)
    assert volume.orientation == "LAS"


def test_written_files_get_normal_permissions(tmp_path, rng):
    import os
    import stat

    path = write_volume(random_volume(rng), tmp_path / "perm.nii.gz")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask

"""NIfTI specifics: qform/sform codes are kept exactly (0 included), and the bounded .nii.gz reader
returns exactly what nibabel returns (scaling, byte order, channels)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medseg.io import read_volume, write_label_map, write_volume
from tests.io.helpers import oblique_affine

CODE_PAIRS = [(0, 0), (1, 0), (0, 1), (1, 1), (2, 2), (1, 4), (0, 3), (4, 2)]


def _coded_image(affine, qform_code: int, sform_code: int, array=None) -> nib.Nifti1Image:
    array = np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8) if array is None else array
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine if qform_code else None, code=qform_code)
    image.set_sform(affine if sform_code else None, code=sform_code)
    return image


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("qform_code,sform_code", CODE_PAIRS)
def test_codes_round_trip_exactly(tmp_path, suffix, qform_code, sform_code):
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = (-40.0, 12.5, 7.0)
    source = tmp_path / f"source{suffix}"
    nib.save(_coded_image(affine, qform_code, sform_code), source)
    out = tmp_path / f"copy{suffix}"
    write_volume(read_volume(source), out)
    written, original = nib.load(out), nib.load(source)
    assert (int(written.header["qform_code"]), int(written.header["sform_code"])) == (qform_code, sform_code)
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-6)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), np.asanyarray(original.dataobj))


def test_codes_zero_are_kept_for_a_mask_on_the_same_grid(tmp_path):
    source = tmp_path / "unknown_space.nii.gz"
    nib.save(_coded_image(np.diag([2.0, 2.0, 3.0, 1.0]), 0, 0), source)
    image = read_volume(source)
    out = write_label_map((image.array > 100).astype(np.uint8), image, tmp_path / "mask.nii.gz")
    written = nib.load(out)
    assert int(written.header["qform_code"]) == 0 and int(written.header["sform_code"]) == 0
    np.testing.assert_allclose(written.affine, nib.load(source).affine, atol=1e-6)


def test_moved_grid_gets_fresh_scanner_codes(tmp_path):
    """Once the affine changes (here: reoriented) the source's codes no longer describe it: codes become 1."""
    source = tmp_path / "src.nii.gz"
    nib.save(_coded_image(oblique_affine(angles=(0, 0, 0)), 0, 2), source)
    volume = read_volume(source).reoriented("LPS")
    out = write_volume(volume, tmp_path / "lps.nii.gz")
    header = nib.load(out).header
    assert int(header["sform_code"]) == 1 and int(header["qform_code"]) == 1
    np.testing.assert_allclose(nib.load(out).affine, volume.affine, atol=1e-6)


@pytest.mark.parametrize(
    "dtype,slope,inter,shape",
    [("<i2", 1.0, 0.0, (9, 8, 7)), (">i2", 1.0, 0.0, (9, 8, 7)), ("<i2", 2.5, -1024.0, (9, 8, 7)),
     (">f4", 1.0, 0.0, (9, 8, 7, 3)), ("<u1", 0.5, 3.0, (5, 6, 7))],
)
def test_gzip_reader_matches_nibabel(tmp_path, rng, dtype, slope, inter, shape):
    array = rng.integers(0, 120, shape).astype(dtype)
    image = nib.Nifti1Image(array, oblique_affine())
    image.set_data_dtype(dtype)
    image.header.set_slope_inter(slope, inter)
    path = tmp_path / "scaled.nii.gz"
    nib.save(image, path)
    expected = np.asanyarray(nib.load(path).dataobj)
    volume = read_volume(path, allow_channels=True)
    assert volume.array.dtype == expected.dtype.newbyteorder("=") and volume.array.dtype.isnative
    np.testing.assert_array_equal(volume.array, expected)

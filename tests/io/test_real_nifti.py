"""Real MRI with permuted, oblique and anisotropic geometry (sct_spinalcord) and big-endian NIfTI."""

import numpy as np
import pytest

from medseg.io import read_volume, write_volume
from medseg.io.geometry import corner_points

PAIRS = [
    ("sct_spinalcord/t1/t1w.nii.gz", "sct_spinalcord/t1/t1w_seg-manual.nii.gz", "RAS"),
    ("sct_spinalcord/t2/t2.nii.gz", "sct_spinalcord/t2/t2_seg-manual.nii.gz", "PSR"),
    ("sct_spinalcord/t2s/t2s.nii.gz", "sct_spinalcord/t2s/t2s_seg-deepseg.nii.gz", "LAS"),
    ("sct_spinalcord/t2/t2.nii.gz", "sct_spinalcord/t2/t2_seg-manual_labeled.nii.gz", "PSR"),
]


@pytest.mark.parametrize("image_path,mask_path,orientation", PAIRS)
@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz"])
def test_image_and_mask_stay_aligned_through_convert(shared_file, tmp_path, image_path, mask_path, orientation, suffix):
    image = read_volume(shared_file(image_path))
    mask = read_volume(shared_file(mask_path), role="label")
    assert image.orientation == orientation
    assert image.same_grid(mask)
    write_volume(image, tmp_path / f"image{suffix}")
    write_volume(mask, tmp_path / f"mask{suffix}")
    image_back = read_volume(tmp_path / f"image{suffix}")
    mask_back = read_volume(tmp_path / f"mask{suffix}", role="label")
    assert image_back.same_grid(mask_back, atol_mm=1e-5)
    assert image_back.same_grid(image, atol_mm=1e-5)
    np.testing.assert_array_equal(mask_back.array, mask.array)
    np.testing.assert_array_equal(image_back.array, image.array)
    # The mask still covers the same world points: its centroid in mm is unchanged.
    def centroid(volume):
        ijk = np.argwhere(volume.array > 0)
        return (ijk @ volume.affine[:3, :3].T + volume.affine[:3, 3]).mean(axis=0)
    np.testing.assert_allclose(centroid(mask_back), centroid(mask), atol=1e-4)


def test_int64_and_float64_masks_become_small_unsigned(shared_file):
    assert read_volume(shared_file("sct_spinalcord/t2s/t2s_seg-deepseg.nii.gz"), role="label").array.dtype == np.uint8
    labeled = read_volume(shared_file("sct_spinalcord/t2/t2_seg-manual_labeled.nii.gz"), role="label")
    assert labeled.array.dtype == np.uint8 and set(np.unique(labeled.array)) == {0, 2, 3, 4, 5}


def test_big_endian_las_anatomical(shared_file):
    volume = read_volume(shared_file("monai_ct_dicom/nifti/anatomical.nii"))
    assert volume.array.dtype == np.int16 and volume.array.dtype.isnative
    assert volume.orientation == "LAS" and volume.shape == (33, 41, 25)
    assert volume.array.min() == -610 and volume.array.max() == 30393


def test_sform_preferred_over_qform_like_nibabel(shared_file):
    import nibabel as nib

    path = shared_file("sct_spinalcord/t2s/t2s.nii.gz")
    np.testing.assert_allclose(read_volume(path).affine, nib.load(path).affine)
    np.testing.assert_allclose(corner_points((2, 2, 2), read_volume(path).affine), corner_points((2, 2, 2), nib.load(path).affine))

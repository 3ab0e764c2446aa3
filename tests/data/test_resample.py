"""The separable-matrix image resampler must be the interpolation SimpleITK would have done."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medseg.data.resample import _separable_resample, _sitk_resample, axis_matrix, resample_3d

SHAPES = [
    ((40, 33, 20), (15, 20, 31)),  # shrink, grow and both at once
    ((10, 12, 9), (10, 30, 5)),  # one axis unchanged
    ((64, 64, 64), (64, 40, 64)),
    ((5, 3, 7), (3, 8, 2)),  # short axes
]


@pytest.mark.parametrize("order, interpolator", [(1, sitk.sitkLinear), (3, sitk.sitkBSpline)])
@pytest.mark.parametrize("shape, new_shape", SHAPES)
def test_separable_equals_simpleitk(order, interpolator, shape, new_shape):
    rng = np.random.default_rng(sum(shape) + order)
    array = (rng.normal(size=shape) * 300).astype(np.float32)
    expected = _sitk_resample(array, new_shape, interpolator)
    result = _separable_resample(array, new_shape, order)
    assert result.dtype == np.float32 and result.shape == new_shape and result.flags.c_contiguous
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5 * np.abs(array).max())


@pytest.mark.parametrize("order", [1, 3])
def test_axis_matrix_reproduces_constants_and_samples(order):
    # Interpolation keeps a constant signal and, at the same length, every sample.
    for old, new in [(7, 3), (7, 19), (50, 13)]:
        np.testing.assert_allclose(axis_matrix(old, new, order).sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(axis_matrix(9, 9, order), np.eye(9), atol=1e-5)
    with pytest.raises(ValueError, match="orders 1 and 3"):
        axis_matrix(5, 4, 2)


def test_anisotropic_image_path_keeps_nearest_slices_and_matches_itk_in_plane():
    rng = np.random.default_rng(3)
    array = rng.normal(size=(30, 26, 8)).astype(np.float32)
    new_shape = (12, 17, 8)  # slice axis kept: only the in-plane axes are interpolated
    result = resample_3d(array, new_shape, "image", axis=2, image_order=3)
    for index in range(8):
        expected = _sitk_resample(array[..., index], new_shape[:2], sitk.sitkBSpline)
        np.testing.assert_allclose(result[..., index], expected, atol=1e-5)
    thinner = resample_3d(array, (12, 17, 4), "image", axis=2, image_order=3, out_of_plane_order=0)
    np.testing.assert_allclose(thinner, result[..., [1, 3, 5, 7]], atol=1e-6)


@pytest.mark.parametrize("axis", [None, 0, 2])
def test_memory_layout_does_not_change_the_result(axis):
    # NIfTI volumes arrive x-fastest (Fortran order) and are resampled without a transposing copy.
    rng = np.random.default_rng(7)
    array = rng.normal(size=(31, 24, 18)).astype(np.float32)
    new_shape = (12, 30, 18) if axis == 2 else (31, 11, 7) if axis == 0 else (12, 30, 9)
    expected = resample_3d(array, new_shape, "image", axis=axis, image_order=3)
    fortran = resample_3d(np.asfortranarray(array), new_shape, "image", axis=axis, image_order=3)
    assert fortran.flags.c_contiguous
    np.testing.assert_allclose(fortran, expected, atol=1e-5)

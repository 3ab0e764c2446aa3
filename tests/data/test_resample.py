"""medseg's resampler (separable matrices and index lookups, no SimpleITK) must be the interpolation
SimpleITK would have done: images, nearest-neighbour labels and per-class-linear labels."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medseg.data.resample import _separable_resample, axis_matrix, resample_3d


def _sitk_resample(array: np.ndarray, new_shape, interpolator: int) -> np.ndarray:
    """The oracle: edge-aligned resampling of one 2D or 3D array with SimpleITK (index space: unit spacing, zero origin)."""
    reverse = tuple(reversed(range(array.ndim)))  # numpy (x, y, z) <-> ITK index order
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(reverse)))
    scale = [float(o) / float(n) for o, n in zip(array.shape, new_shape)]
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(n) for n in new_shape])
    resampler.SetOutputSpacing(scale)
    resampler.SetOutputOrigin([0.5 * (s - 1.0) for s in scale])
    resampler.SetInterpolator(interpolator)
    resampler.SetDefaultPixelValue(0)
    resampler.SetOutputPixelType(image.GetPixelID())
    return np.ascontiguousarray(sitk.GetArrayFromImage(resampler.Execute(image)).transpose(reverse))

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


def _blobs(shape, seed: int, classes: int = 4) -> np.ndarray:
    """A label map of overlapping smooth blobs (real boundaries, several classes touching)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    labels = np.zeros(shape, np.uint8)
    for value in range(1, classes + 1):
        centre, radius = rng.uniform(-0.5, 0.5, 3), rng.uniform(0.3, 0.7)
        labels[(((grid - centre[:, None, None, None]) ** 2).sum(0)) < radius**2] = value
    return labels


def _ties(shape, new_shape) -> np.ndarray:
    """Output voxels whose source coordinate is a half-integer on some axis: ITK's float rounding may send them either way."""
    from medseg.data.resample import _source_coordinates

    masks = []
    for axis, (old, new) in enumerate(zip(shape, new_shape)):
        fraction = np.abs(np.mod(_source_coordinates(old, new), 1.0) - 0.5) < 1e-6
        masks.append(fraction.reshape([-1 if a == axis else 1 for a in range(3)]))
    return np.logical_or.reduce(np.broadcast_arrays(*masks))


@pytest.mark.parametrize("shape, new_shape", SHAPES)
def test_nearest_labels_equal_simpleitk(shape, new_shape):
    labels = _blobs(shape, seed=sum(shape))
    result = resample_3d(labels, new_shape, "label_nearest")
    expected = _sitk_resample(labels, new_shape, sitk.sitkNearestNeighbor)
    assert result.dtype == labels.dtype
    differ = result != expected
    assert not np.any(differ & ~_ties(shape, new_shape)), "only exact .5 ties may round the other way"


@pytest.mark.parametrize("shape, new_shape", SHAPES[:3])
def test_per_class_linear_labels_equal_simpleitk(shape, new_shape):
    labels = _blobs(shape, seed=sum(shape) + 1)
    result = resample_3d(labels, new_shape, "label_linear")
    expected = _sitk_resample(labels, new_shape, sitk.sitkLabelLinear)
    assert result.dtype == labels.dtype
    weights = np.stack([_sitk_resample((labels == v).astype(np.float32), new_shape, sitk.sitkLinear) for v in range(int(labels.max()) + 1)])
    top = np.sort(weights, axis=0)
    tie = top[-1] - top[-2] < 1e-5
    assert not np.any((result != expected) & ~tie), "only equal class weights may be decided the other way"
    assert set(np.unique(result)) <= set(np.unique(labels)), "never a value that was not there"

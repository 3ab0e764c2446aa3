"""Continuous maps (uncertainty) go back to the raw grid by the image role's linear interpolation, the same
sampling as the class probabilities that make the mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nibabel.orientations import apply_orientation

from medseg.data.preprocess import preprocess_volume, restore_image_map, restore_labels
from medseg.data.resample import kind_for_role, resample_3d
from medseg.io.volume import Volume
from tests.data.test_preprocess_inverse import _plan


def _oracle(values: np.ndarray, geometry) -> np.ndarray:
    """Full-canvas resample_3d with the image role at order 1 (nearest slice along a separate axis), 0 outside the crop."""
    back = resample_3d(values, geometry.cropped_shape, kind_for_role("image", None), axis=geometry.separate_axis,
                       image_order=1, out_of_plane_order=0)
    canvas = np.zeros(tuple(geometry.ras_shape), np.float32)
    canvas[geometry.crop_region] = back
    return apply_orientation(canvas, geometry.inverse_orientation())


@pytest.mark.parametrize(
    "spacing, orientation, target",
    [((1.0, 1.0, 4.0), "LPS", [1.5, 1.5, 1.5]), ((0.8, 0.8, 1.5), "PSR", [1.5, 1.5, 1.5]), ((1.0, 4.0, 1.0), "ILP", [2.0, 1.0, 0.7])],
)
def test_restore_image_map_is_the_image_role_linear_resampling(spacing, orientation, target, rng):
    array = rng.normal(size=(30, 36, 14)).astype(np.float32) * 50 + 60
    array[:2] = 0  # a zero border: the crop box is smaller than the image
    volume = Volume(array, np.diag([*spacing, 1.0])).reoriented(orientation)
    geometry = preprocess_volume(volume, _plan(target)).geometry
    values = torch.from_numpy(rng.uniform(size=geometry.resampled_shape).astype(np.float32))
    restored = restore_image_map(values, geometry, chunk_mb=8)
    assert restored.shape == volume.shape and restored.dtype == np.float32
    np.testing.assert_allclose(restored, _oracle(values.numpy(), geometry), atol=1e-5)
    # ... and the very sampling of the probabilities: channel 1 restored either way agrees (float16 storage)
    probabilities = torch.softmax(torch.from_numpy(rng.normal(size=(2, *geometry.resampled_shape)).astype(np.float32)), 0)
    _, raw = restore_labels(probabilities, geometry, keep_probabilities=True)
    inside = np.zeros(tuple(geometry.ras_shape), bool)
    inside[geometry.crop_region] = True
    inside = apply_orientation(inside, geometry.inverse_orientation())
    np.testing.assert_allclose(restore_image_map(probabilities[1], geometry)[inside], raw[1][inside].astype(np.float32), atol=1e-3)


def test_restore_image_map_rejects_a_wrong_grid(rng):
    geometry = preprocess_volume(Volume(rng.normal(size=(20, 20, 10)).astype(np.float32) + 5, np.eye(4)), _plan([1.5] * 3)).geometry
    with pytest.raises(ValueError, match="preprocessed grid"):
        restore_image_map(torch.zeros(3, 3, 3), geometry)

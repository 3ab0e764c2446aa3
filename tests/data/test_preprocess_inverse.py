"""The slab-wise inverse of preprocessing equals the slow reference inverse (a test oracle) followed by argmax;
label (instance id) maps come back by nearest neighbour, exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.data.preprocess import preprocess_volume, restore_label_map, restore_labels
from medseg.io.volume import Volume
from medseg.schema import Plan
from tests.data.reference_inverse import invert_to_raw


def _plan(target) -> Plan:
    return Plan.model_validate({
        "dataset": "restore", "labels": {0: "background", 1: "a", 2: "b", 3: "c"}, "target_spacing": list(target),
        "preprocessing": {"num_channels": 1, "target_spacing": list(target), "labels": [0, 1, 2, 3], "class_locations_per_class": 10,
                          "normalization": [{"channel": 0, "name": "CT", "modality": "CT", "scheme": "ct", "clip": [-100.0, 200.0], "mean": 50.0, "std": 40.0}]},
        "configurations": {"3d_fullres": {"patch_size": [16, 16, 16], "spacing": list(target), "batch_size": 2}},
    })


PLAN = _plan([1.5, 1.5, 1.5])


@pytest.mark.parametrize(
    "shape, spacing, orientation, target",
    [
        ((30, 36, 12), (1.0, 1.0, 4.0), "RAS", [1.5, 1.5, 1.5]),  # thick slices: coarse axis by nearest slice
        ((30, 36, 12), (1.0, 1.0, 4.0), "LPS", [2.0, 2.0, 2.0]),
        ((30, 36, 16), (0.8, 0.8, 1.5), "PSR", [1.5, 1.5, 1.5]),  # permuted axes, trilinear
        ((24, 30, 20), (1.0, 1.0, 1.0), "LAS", [2.0, 1.0, 0.7]),  # up- and downsampling at once
        ((20, 28, 16), (1.0, 4.0, 1.0), "ILP", [1.0, 1.0, 1.0]),  # the coarse axis is not the last one
    ],
)
def test_restore_equals_invert_to_raw_argmax(shape, spacing, orientation, target, rng):
    array = rng.normal(size=shape).astype(np.float32) * 50 + 60
    array[:2] = 0  # a zero border, so the crop box is smaller than the image
    volume = Volume(array, np.diag([*spacing, 1.0])).reoriented(orientation)
    geometry = preprocess_volume(volume, _plan(target)).geometry
    probabilities = torch.softmax(torch.from_numpy(rng.normal(size=(4, *geometry.resampled_shape)).astype(np.float32) * 3), 0)

    reference = invert_to_raw(probabilities.numpy(), geometry, "probabilities")
    labels, raw_probabilities = restore_labels(probabilities, geometry, chunk_mb=1, keep_probabilities=True)

    assert labels.shape == volume.shape
    np.testing.assert_array_equal(labels, reference.argmax(0))
    np.testing.assert_allclose(raw_probabilities.astype(np.float32), reference, atol=1e-3)  # float16 storage
    assert raw_probabilities.dtype == np.float16


def test_restore_rejects_wrong_grid(rng):
    volume = Volume(rng.normal(size=(20, 20, 10)).astype(np.float32) + 5, np.eye(4))
    geometry = preprocess_volume(volume, PLAN).geometry
    with pytest.raises(ValueError, match="preprocessed grid"):
        restore_labels(torch.zeros(4, 3, 3, 3), geometry)
    with pytest.raises(ValueError, match="preprocessed grid"):
        restore_label_map(np.zeros((3, 3, 3), np.uint8), geometry)


@pytest.mark.parametrize("orientation, spacing, target", [("LPS", (1.0, 1.0, 4.0), [1.5, 1.5, 1.5]), ("PSR", (0.8, 0.8, 1.5), [2.0, 1.0, 0.7])])
def test_label_maps_restore_by_nearest_and_equal_the_reference(orientation, spacing, target, rng):
    """Instance ids must never be blended: every restored value is an id that exists, and equals the oracle's."""
    array = rng.normal(size=(30, 36, 12)).astype(np.float32) * 50 + 60
    volume = Volume(array, np.diag([*spacing, 1.0])).reoriented(orientation)
    geometry = preprocess_volume(volume, _plan(target)).geometry
    ids = rng.integers(0, 40, size=geometry.resampled_shape).astype(np.uint16)
    restored = restore_label_map(ids, geometry)
    assert restored.shape == volume.shape and restored.dtype == np.uint16
    np.testing.assert_array_equal(restored, invert_to_raw(ids, geometry, "label_nearest"))
    assert set(np.unique(restored)) <= set(np.unique(ids)) | {0}


@pytest.mark.parametrize("orientation, spacing, target, order", [("LPS", (1.0, 1.0, 4.0), [1.5, 1.5, 1.5], 3), ("PSR", (0.8, 0.8, 1.5), [2.0, 1.0, 0.7], 1)])
def test_device_preprocessing_equals_the_numpy_path(orientation, spacing, target, order, rng):
    """Inference on a GPU normalises and resamples there; the torch path (run here on the CPU) gives the same image."""
    plan = _plan(target)
    plan.preprocessing.resampling.image_order = order
    array = rng.normal(size=(30, 36, 12)).astype(np.float32) * 50 + 60
    volume = Volume(array, np.diag([*spacing, 1.0])).reoriented(orientation)
    reference = preprocess_volume(volume, plan)
    on_device = preprocess_volume(volume, plan, device=torch.device("cpu"))
    assert isinstance(on_device.image, torch.Tensor) and on_device.geometry == reference.geometry
    np.testing.assert_allclose(on_device.image.numpy(), reference.image, atol=2e-5, rtol=1e-5)

"""The slab-wise restore equals invert_to_raw(probabilities).argmax(0) from medseg.data.preprocess."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from medseg.data.preprocess import invert_to_raw, preprocess_volume
from medseg.infer.restore import restore_labels
from medseg.io.volume import Volume

PLAN = {
    "target_spacing": [1.5, 1.5, 1.5],
    "preprocessing": {
        "num_channels": 1,
        "target_spacing": [1.5, 1.5, 1.5],
        "labels": [0, 1, 2, 3],
        "normalization": [{"scheme": "ct", "clip": [-100.0, 200.0], "mean": 50.0, "std": 40.0}],
        "resampling": {"image_order": 3, "label": "per_class_linear", "separate_axis_ratio": 3.0, "out_of_plane_order": 0},
        "class_locations_per_class": 10,
        "seed": 0,
    },
}


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
    plan = copy.deepcopy(PLAN)
    plan["preprocessing"]["target_spacing"] = list(target)
    array = rng.normal(size=shape).astype(np.float32) * 50 + 60
    array[:2] = 0  # a zero border, so the crop box is smaller than the image
    volume = Volume(array, np.diag([*spacing, 1.0])).reoriented(orientation)
    properties = preprocess_volume(volume, plan).properties
    probabilities = torch.softmax(torch.from_numpy(rng.normal(size=(4, *properties["resampled_shape"])).astype(np.float32) * 3), 0)

    reference = invert_to_raw(probabilities.numpy(), properties, "probabilities")
    labels, raw_probabilities = restore_labels(probabilities, properties, chunk_mb=1, keep_probabilities=True)

    assert labels.shape == volume.shape
    np.testing.assert_array_equal(labels, reference.argmax(0))
    np.testing.assert_allclose(raw_probabilities.astype(np.float32), reference, atol=1e-3)  # float16 storage
    assert raw_probabilities.dtype == np.float16


def test_restore_rejects_wrong_grid(rng):
    volume = Volume(rng.normal(size=(20, 20, 10)).astype(np.float32) + 5, np.eye(4))
    properties = preprocess_volume(volume, PLAN).properties
    with pytest.raises(ValueError, match="preprocessed grid"):
        restore_labels(torch.zeros(4, 3, 3, 3), properties)

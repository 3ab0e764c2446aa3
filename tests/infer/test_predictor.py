"""Sliding-window details that need no trained model: 2D networks on 3D cases, batch defaults, window counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from medseg.errors import ConfigError
from medseg.infer.predictor import WindowSpec, count_windows, default_sw_batch_size, mirror_sets, predict_probabilities
from medseg.models.config import ModelConfig
from medseg.models.registry import build_model
from medseg.runtime import resolve_runtime, runtime_scope

CPU = torch.device("cpu")
RUNTIME = resolve_runtime("cpu", "off", 1)


def _network(patch: tuple[int, ...], classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(base_features=4, max_features=16), 1, classes, {"patch_size": list(patch)}).eval()


@pytest.mark.parametrize("slice_axis", [2, 0])
def test_2d_network_predicts_each_slice_along_its_axis(slice_axis):
    network = _network((16, 16))
    image = np.random.default_rng(0).normal(size=(1, 20, 24, 5) if slice_axis == 2 else (1, 5, 20, 24)).astype(np.float32)
    spec = WindowSpec((16, 16), 0.5, 1, slice_axis=slice_axis)
    with runtime_scope(RUNTIME):
        probabilities = predict_probabilities([network], image, spec, RUNTIME, CPU, 3)
        assert probabilities.shape == (3, *image.shape[1:])
        plane = image[None, :, :, :, 3] if slice_axis == 2 else image[None, :, 3]
        with torch.no_grad():
            expected = sliding_window_inference(torch.from_numpy(np.ascontiguousarray(plane)), (16, 16), 1,
                                                lambda x: torch.softmax(network(x), 1), overlap=0.5, mode="gaussian")
    got = probabilities[:, :, :, 3] if slice_axis == 2 else probabilities[:, 3]
    torch.testing.assert_close(got, expected[0], atol=1e-5, rtol=1e-5)


def test_sigmoid_activation_for_region_models():
    network = _network((16, 16, 8), classes=2)
    image = np.random.default_rng(1).normal(size=(1, 16, 16, 8)).astype(np.float32)
    with runtime_scope(RUNTIME):
        sigmoid = predict_probabilities([network], image, WindowSpec((16, 16, 8), activation="sigmoid"), RUNTIME, CPU, 2)
        with torch.no_grad():
            logits = network(torch.from_numpy(image)[None])[0]
    torch.testing.assert_close(sigmoid, torch.sigmoid(logits), atol=1e-5, rtol=1e-5)


def test_mirror_sets():
    assert mirror_sets(None, 3, tta=False) == ((),)
    assert len(mirror_sets(None, 3, tta=True)) == 8 and mirror_sets(None, 3, tta=True)[-1] == (2, 3, 4)
    assert mirror_sets([0, 2], 3, tta=True) == ((), (2,), (4,), (2, 4))
    assert mirror_sets(None, 2, tta=True) == ((), (2,), (3,), (2, 3))
    with pytest.raises(ConfigError):
        mirror_sets([3], 3, tta=True)


def test_default_batch_and_window_count():
    cpu = torch.device("cpu")
    assert default_sw_batch_size(cpu, (96, 96, 96)) == 1 and default_sw_batch_size(cpu, (32, 32, 16)) == 8
    assert count_windows((137, 137, 150), (96, 96, 96), 0.5) == 2 * 2 * 3
    assert count_windows((60, 60, 27), (32, 32, 16), 0.5) == 3 * 3 * 3
    assert count_windows((20, 24, 5), (16, 16), 0.5) == 5 * 2 * 2
    assert count_windows((5, 20, 24), (16, 16), 0.5, slice_axis=0) == 5 * 2 * 2
    assert default_sw_batch_size(torch.device("cuda"), (128, 128, 128)) == 4 and default_sw_batch_size(torch.device("cuda"), (64, 64, 64)) == 32


def test_window_count_matches_monai():
    network = _network((16, 16, 8), classes=2)
    calls = []
    image = np.zeros((1, 37, 20, 9), dtype=np.float32)
    with runtime_scope(RUNTIME):
        predict_probabilities([network], image, WindowSpec((16, 16, 8), 0.5, 1), RUNTIME, CPU, 2, on_windows=calls.append)
    assert sum(calls) == count_windows((37, 20, 9), (16, 16, 8), 0.5)

"""Sliding-window details that need no trained model: 2D networks on 3D cases, batch defaults, window counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from medseg.errors import ConfigError
from medseg.infer.config import InferConfig
from medseg.infer.model import LoadedModel
from medseg.infer.predictor import count_windows, default_sw_batch_size, make_runtime, mirror_sets, predict_probabilities, torch_threads
from medseg.models.config import ModelConfig
from medseg.models.registry import build_model


def _model(patch: tuple[int, ...], classes: int = 3) -> LoadedModel:
    torch.manual_seed(0)
    network = build_model(ModelConfig(base_features=4, max_features=16), 1, classes, {"patch_size": list(patch)}).eval()
    labels = {k: f"class_{k}" for k in range(classes)}
    return LoadedModel([network], {}, labels, 1, patch, "dynunet", [])


def test_2d_network_predicts_each_axial_slice_on_its_own():
    model = _model((16, 16))
    config = InferConfig(threads=1)
    runtime = make_runtime(config)
    image = np.random.default_rng(0).normal(size=(1, 20, 24, 5)).astype(np.float32)
    with torch_threads(1):
        probabilities = predict_probabilities(model, image, config, runtime)
        assert probabilities.shape == (3, 20, 24, 5)
        with torch.no_grad():
            slice_3 = sliding_window_inference(torch.from_numpy(image[None, :, :, :, 3]), (16, 16), 1,
                                               lambda x: torch.softmax(model.networks[0](x), 1), overlap=0.5, mode="gaussian")
    torch.testing.assert_close(probabilities[:, :, :, 3], slice_3[0], atol=1e-5, rtol=1e-5)


def test_mirror_sets():
    assert mirror_sets(None, 3, tta=False) == [()]
    assert len(mirror_sets(None, 3, tta=True)) == 8 and mirror_sets(None, 3, tta=True)[-1] == (2, 3, 4)
    assert mirror_sets([0, 2], 3, tta=True) == [(), (2,), (4,), (2, 4)]
    assert mirror_sets(None, 2, tta=True) == [(), (2,), (3,), (2, 3)]
    with pytest.raises(ConfigError):
        mirror_sets([3], 3, tta=True)


def test_default_batch_and_window_count():
    cpu = torch.device("cpu")
    assert default_sw_batch_size(cpu, (96, 96, 96)) == 1 and default_sw_batch_size(cpu, (32, 32, 16)) == 8
    assert count_windows((137, 137, 150), (96, 96, 96), 0.5) == 2 * 2 * 3
    assert count_windows((60, 60, 27), (32, 32, 16), 0.5) == 3 * 3 * 3
    assert count_windows((20, 24, 5), (16, 16), 0.5) == 5 * 2 * 2


def test_window_count_matches_monai():
    model = _model((16, 16, 8), classes=2)
    calls = []
    config = InferConfig(threads=1, sw_batch_size=1)
    image = np.zeros((1, 37, 20, 9), dtype=np.float32)
    with torch_threads(1):
        predict_probabilities(model, image, config, make_runtime(config), on_windows=calls.append)
    assert sum(calls) == count_windows((37, 20, 9), (16, 16, 8), 0.5)

"""augment.modality_dropout_prob: a random non-empty strict subset of channels zeroed, seeded, last in the pipeline."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from medseg.transforms.augment import build_augmentation
from medseg.transforms.config import AugmentConfig
from medseg.transforms.modality import RandModalityDropoutd, draw_dropped_channels


def _sample(channels: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(channels, 12, 12, 8, generator=generator) + 3.0, "label": torch.zeros(1, 12, 12, 8)}


def _dropped(image: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(c) for c in range(image.shape[0]) if not image[c].any())


def test_never_all_never_none_and_every_subset_drawn():
    random = np.random.RandomState(0)
    for channels in (2, 3, 4):
        draws = Counter(draw_dropped_channels(random, channels) for _ in range(3000))
        assert all(0 < len(subset) < channels for subset in draws)
        assert len(draws) == 2**channels - 2  # each non-empty strict subset occurs
        assert max(draws.values()) / min(draws.values()) < 1.5  # about uniform
    assert draw_dropped_channels(random, 1) == ()


def test_transform_zeroes_channels_with_its_probability_and_is_seeded():
    def run(seed: int) -> list[tuple[int, ...]]:
        transform = RandModalityDropoutd(prob=0.5)
        transform.set_random_state(seed=seed)
        return [_dropped(transform(_sample(3, index))["image"]) for index in range(200)]

    first = run(7)
    assert first == run(7) and first != run(8)
    assert all(len(dropped) < 3 for dropped in first)  # never every channel
    share = sum(bool(dropped) for dropped in first) / len(first)
    assert 0.4 < share < 0.6
    one_channel = RandModalityDropoutd(prob=1.0)
    sample = _sample(1)
    assert torch.equal(one_channel(sample)["image"], sample["image"])


def test_in_the_pipeline_a_dropped_channel_stays_exactly_zero():
    """Last in the pipeline: noise, blur and intensity changes come before it, so 'missing' is exactly 0."""
    config = AugmentConfig(noise_prob=1.0, blur_prob=1.0, brightness_prob=1.0, gamma_prob=1.0, modality_dropout_prob=1.0)
    pipeline = build_augmentation(config, (8, 8, 8), seed=3)
    results = [pipeline(_sample(2, index))["image"] for index in range(20)]
    assert all(len(_dropped(image)) == 1 for image in results)
    again = build_augmentation(config, (8, 8, 8), seed=3)
    assert all(torch.equal(a, again(_sample(2, index))["image"]) for index, a in enumerate(results))
    off = build_augmentation(AugmentConfig(modality_dropout_prob=1.0, enabled=False), (8, 8, 8))
    assert _dropped(off(_sample(2))["image"]) == ()  # validation patches (augmentation off) keep every channel

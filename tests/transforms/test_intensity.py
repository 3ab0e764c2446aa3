"""Intensity augmentation matches nnU-Net v2 (2.8.1, batchgeneratorsv2 0.3.6): distributions and effective rates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from medseg.transforms.augment import build_augmentation
from medseg.transforms.config import AugmentConfig
from medseg.transforms.intensity import (
    RandChannelBrightnessd,
    RandChannelContrastd,
    RandChannelGammad,
    RandChannelLowResd,
    below_or_above_one,
)

OFF = dict(rotation_prob=0, scale_prob=0, mirror_prob=0, noise_prob=0, blur_prob=0, brightness_prob=0, contrast_prob=0,
           lowres_prob=0, gamma_prob=0, inverted_gamma_prob=0)


def _only(**on) -> AugmentConfig:
    """Every transform off except ``on`` (the rest of its settings stay nnU-Net's defaults)."""
    return AugmentConfig(**{**OFF, **on})


def _image(channels: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(channels, *shape, generator=torch.Generator().manual_seed(seed))


def _changed_channels(config: AugmentConfig, draws: int, channels: int = 2, shape=(16, 16, 16)) -> np.ndarray:
    """Per draw and channel: did the pipeline change it?"""
    pipeline = build_augmentation(config, shape, seed=1)
    image = _image(channels, shape)
    changed = np.zeros((draws, channels), bool)
    for draw in range(draws):
        out = torch.as_tensor(pipeline({"image": image, "label": torch.zeros(1, *shape)})["image"])
        changed[draw] = [not torch.allclose(out[c], image[c]) for c in range(channels)]
    return changed


def test_noise_standard_deviation_is_uniform_up_to_0_1():
    """nnU-Net draws ``noise_variance`` from U(0, 0.1) and uses the draw as the *standard deviation*
    (``normal_(std=sigma)``), one per sample: so sigma ~ U(0, 0.1) and the variance averages 0.1**2 / 3."""
    shape = (24, 24, 24)
    pipeline = build_augmentation(_only(noise_prob=1), shape, seed=2)
    zeros = torch.zeros(2, *shape)
    sigmas = []
    for _ in range(300):
        out = torch.as_tensor(pipeline({"image": zeros, "label": torch.zeros(1, *shape)})["image"])
        sigmas.append([float(out[c].std()) for c in range(2)])
    sigmas = np.asarray(sigmas)
    assert np.allclose(sigmas[:, 0], sigmas[:, 1], rtol=0.1)  # one sigma for every channel
    assert stats.kstest(sigmas[:, 0], "uniform", args=(0, 0.1)).pvalue > 0.01
    assert np.mean(sigmas[:, 0] ** 2) == pytest.approx(0.1**2 / 3, rel=0.15)


@pytest.mark.parametrize("knob,rate", [("blur_prob", 0.2 * 0.5), ("lowres_prob", 0.25 * 0.5)])
def test_blur_and_low_resolution_fire_at_nnunets_per_channel_rate(knob, rate):
    """p per sample x 0.5 per channel (before: the per-sample rate for every channel, twice nnU-Net's)."""
    config = AugmentConfig(**{**OFF, knob: AugmentConfig().model_dump()[knob]})
    changed = _changed_channels(config, 600, shape=(32, 32, 32) if knob == "lowres_prob" else (8, 8, 8))
    if knob == "lowres_prob":
        rate *= 1 - 1 / 64  # a zoom above 63.5/64 rounds back to 32 voxels: nothing to change
    assert changed.mean() == pytest.approx(rate, abs=0.035)  # 3 standard errors; the old rates were 0.2 and 0.25
    both = (changed[:, 0] & changed[:, 1]).mean()  # channels chosen independently once the sample fired
    assert both == pytest.approx(rate * 0.5, abs=0.025)


def test_brightness_and_contrast_draw_one_factor_per_channel():
    image = _image(2, (8, 8, 8)) + 3.0
    for transform in (RandChannelBrightnessd(1.0, (0.75, 1.25)), RandChannelContrastd(1.0, (0.75, 1.25))):
        transform.set_random_state(seed=0)
        spreads = []
        for _ in range(20):
            out = transform({"image": image})["image"]
            spreads.append([float((out[c] - out[c].mean()).std() / (image[c] - image[c].mean()).std()) for c in range(2)])
        spreads = np.asarray(spreads)
        assert not np.allclose(spreads[:, 0], spreads[:, 1], atol=1e-3), type(transform).__name__


def test_contrast_keeps_the_mean_up_to_clipping_and_the_range():
    image = _image(1, (10, 10, 10))
    transform = RandChannelContrastd(1.0, (0.75, 1.25))
    transform.set_random_state(seed=3)
    for _ in range(10):
        out = transform({"image": image})["image"]
        assert out.min() >= image.min() and out.max() <= image.max()


def test_factors_fall_below_and_above_one_equally_often():
    random = np.random.RandomState(0)
    draws = np.array([below_or_above_one(random, 0.7, 1.5) for _ in range(4000)])
    assert (draws < 1).mean() == pytest.approx(0.5, abs=0.03)  # a plain U(0.7, 1.5) gives 0.375
    assert draws.min() >= 0.7 and draws.max() <= 1.5


def test_gamma_maps_the_range_onto_itself():
    image = _image(1, (10, 10, 10))
    low, high = image.min(), image.max()
    gamma = RandChannelGammad(1.0, (2.0, 2.0), retain_stats=False)  # gamma fixed at 2
    out = gamma({"image": image})["image"]
    torch.testing.assert_close(out, ((image - low) / (high - low)) ** 2 * (high - low) + low)


def test_inverted_gamma_inverts_applies_gamma_and_inverts_back():
    """nnU-Net's inverted gamma: negate, gamma on [min, max], negate back. The range is kept; gamma then acts
    from the bright end (distance to the maximum), not from the dark end."""
    image = _image(1, (10, 10, 10))
    low, high = image.min(), image.max()
    inverted = RandChannelGammad(1.0, (2.0, 2.0), invert=True, retain_stats=False)
    out = inverted({"image": image})["image"]
    torch.testing.assert_close(out, high - ((high - image) / (high - low)) ** 2 * (high - low))
    assert float(out.min()) == pytest.approx(float(low), abs=1e-5) and float(out.max()) == pytest.approx(float(high), abs=1e-5)
    assert out.mean() > image.mean()  # gamma 2 bends from the bright end: values move up (plain gamma 2 moves them down)


def test_gamma_with_retained_stats_keeps_mean_and_std():
    image = _image(2, (10, 10, 10)) * 2 + 1
    for invert in (False, True):
        transform = RandChannelGammad(1.0, (0.7, 1.5), invert=invert)
        transform.set_random_state(seed=4)
        out = transform({"image": image})["image"]
        for c in range(2):
            assert float(out[c].mean()) == pytest.approx(float(image[c].mean()), abs=1e-4)
            assert float(out[c].std()) == pytest.approx(float(image[c].std()), rel=1e-4)


def test_pipeline_runs_inverted_gamma_before_gamma_at_nnunets_rates():
    pipeline = build_augmentation(AugmentConfig(), (8, 8, 8))
    gammas = [t for t in pipeline.transforms if isinstance(t, RandChannelGammad)]
    assert [(t.invert, t.prob) for t in gammas] == [(True, 0.1), (False, 0.3)]


def test_low_resolution_leaves_the_slice_axis_alone_in_plane():
    """Dummy-2D (thick slices): nnU-Net's low-resolution simulation ignores the slice axis."""
    image = torch.zeros(1, 8, 8, 12)
    image[..., ::2] = 1.0  # varies along z only: an in-plane zoom cannot change it
    transform = RandChannelLowResd(1.0, 1.0, (0.5, 0.5), ignore_axes=(2,))
    torch.testing.assert_close(transform({"image": image})["image"], image)
    changed = RandChannelLowResd(1.0, 1.0, (0.5, 0.5))({"image": image})["image"]
    assert not torch.allclose(changed, image)


def test_inputs_are_never_modified_in_place():
    image = _image(2, (8, 8, 8))
    before = image.clone()
    config = AugmentConfig(**{**OFF, "blur_prob": 1, "blur_channel_prob": 1, "brightness_prob": 1, "contrast_prob": 1,
                              "lowres_prob": 1, "lowres_channel_prob": 1, "gamma_prob": 1, "inverted_gamma_prob": 1})
    build_augmentation(config, (8, 8, 8), seed=0)({"image": image, "label": torch.zeros(1, 8, 8, 8)})
    torch.testing.assert_close(image, before)

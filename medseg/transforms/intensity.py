"""Intensity augmentation with nnU-Net v2's distributions and probabilities.

nnU-Net (``nnUNetTrainer.get_training_transforms``, batchgeneratorsv2) applies each intensity
transform to a sample with one probability and then to each channel with a second one, drawing the
factors per channel; the MONAI transforms used before drew once per sample for all channels, so
blur and low-resolution ran at twice nnU-Net's per-channel rate (0.2 and 0.25 instead of 0.2 x 0.5
and 0.25 x 0.5) and multi-channel images got one factor for every modality. Factors for brightness,
contrast and gamma come from nnU-Net's ``BGContrast`` rule: half the draws below 1, half above.

Each transform works on ``data["image"]`` (C, *spatial), draws everything from its MONAI random
state (so :func:`medseg.transforms.augment.build_augmentation`'s seeding covers it) and returns a
new plain tensor, never changing its input.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import MapTransform, RandomizableTransform

IMAGE = "image"
_EPS = 1e-7  # nnU-Net's guard for a constant channel


def below_or_above_one(random: np.random.RandomState, low: float, high: float) -> float:
    """nnU-Net's ``BGContrast`` draw: with probability 1/2 from ``[low, 1)`` (when low < 1), else from ``[max(low, 1), high)``."""
    if random.uniform() < 0.5 and low < 1:
        return float(random.uniform(low, 1.0))
    return float(random.uniform(max(low, 1.0), high))


class _PerChannel(RandomizableTransform, MapTransform):
    """With probability ``prob`` per sample, then ``channel_prob`` per channel, change a channel of the image."""

    def __init__(self, prob: float, channel_prob: float = 1.0) -> None:
        RandomizableTransform.__init__(self, prob=prob)
        MapTransform.__init__(self, [IMAGE], allow_missing_keys=True)
        self.channel_prob = float(channel_prob)

    def channel(self, values: torch.Tensor) -> torch.Tensor:
        """One channel (*spatial) changed, drawing its parameters from ``self.R``."""
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        out = dict(data)
        if IMAGE not in out:
            return out
        self.randomize(None)
        if not self._do_transform:
            return out
        image = torch.as_tensor(out[IMAGE])
        chosen = np.flatnonzero(self.R.uniform(size=image.shape[0]) < self.channel_prob)
        if chosen.size == 0:
            return out
        image = image.as_subclass(torch.Tensor).float().clone()
        for index in chosen:
            image[index] = self.channel(image[index])
        out[IMAGE] = image
        return out


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def blur_axis(values: torch.Tensor, sigma: float, axis: int) -> torch.Tensor:
    """1D Gaussian smoothing of ``values`` (*spatial) along ``axis``, borders mirrored (as nnU-Net's ``reflect``)."""
    kernel = _gaussian_kernel(sigma)
    radius = kernel.numel() // 2
    moved = values.movedim(axis, -1)
    rows = moved.reshape(-1, 1, moved.shape[-1])
    mode = "reflect" if radius < moved.shape[-1] else "replicate"
    smoothed = F.conv1d(F.pad(rows, (radius, radius), mode=mode), kernel.view(1, 1, -1))
    return smoothed.reshape(moved.shape).movedim(-1, axis)


class RandChannelBlurd(_PerChannel):
    """Gaussian blur with sigma drawn per channel and per axis (nnU-Net: p 0.2 per sample, 0.5 per channel, sigma 0.5-1)."""

    def __init__(self, prob: float, channel_prob: float, sigma: tuple[float, float]) -> None:
        super().__init__(prob, channel_prob)
        self.sigma = tuple(sigma)

    def channel(self, values: torch.Tensor) -> torch.Tensor:
        for axis in range(values.ndim):
            values = blur_axis(values, float(self.R.uniform(*self.sigma)), axis)
        return values


class RandChannelBrightnessd(_PerChannel):
    """Multiply each channel by its own factor (nnU-Net's ``MultiplicativeBrightnessTransform``)."""

    def __init__(self, prob: float, factors: tuple[float, float]) -> None:
        super().__init__(prob)
        self.factors = tuple(factors)

    def channel(self, values: torch.Tensor) -> torch.Tensor:
        return values * below_or_above_one(self.R, *self.factors)


class RandChannelContrastd(_PerChannel):
    """Scale each channel about its mean, clipped to its former range (nnU-Net's ``ContrastTransform``, preserve_range)."""

    def __init__(self, prob: float, factors: tuple[float, float]) -> None:
        super().__init__(prob)
        self.factors = tuple(factors)

    def channel(self, values: torch.Tensor) -> torch.Tensor:
        mean = values.mean()
        scaled = (values - mean) * below_or_above_one(self.R, *self.factors) + mean
        return scaled.clamp(values.min(), values.max())


class RandChannelLowResd(_PerChannel):
    """Down-sample a channel with nearest neighbour by one factor for every axis but ``ignore_axes``, then
    interpolate back linearly (nnU-Net's ``SimulateLowResolutionTransform``: p 0.25 per sample, 0.5 per channel)."""

    def __init__(self, prob: float, channel_prob: float, zoom: tuple[float, float], ignore_axes: Sequence[int] = ()) -> None:
        super().__init__(prob, channel_prob)
        self.zoom, self.ignore_axes = tuple(zoom), tuple(ignore_axes)

    def channel(self, values: torch.Tensor) -> torch.Tensor:
        factor = float(self.R.uniform(*self.zoom))
        shape = tuple(values.shape)
        small = [size if axis in self.ignore_axes else max(1, round(size * factor)) for axis, size in enumerate(shape)]
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[values.ndim]
        down = F.interpolate(values[None, None], size=small, mode="nearest-exact")
        return F.interpolate(down, size=shape, mode=mode, align_corners=False)[0, 0]


class RandChannelGammad(_PerChannel):
    """``x -> ((x - min) / range) ** gamma * range + min`` per channel, then the channel's mean and standard
    deviation restored (nnU-Net's ``GammaTransform``, retain_stats). ``invert`` applies it to ``-x`` and
    negates back, so gamma < 1 then darkens the bright end instead of brightening the dark end."""

    def __init__(self, prob: float, gamma: tuple[float, float], invert: bool = False, retain_stats: bool = True) -> None:
        super().__init__(prob)
        self.gamma, self.invert, self.retain_stats = tuple(gamma), invert, retain_stats

    def channel(self, values: torch.Tensor) -> torch.Tensor:
        gamma = below_or_above_one(self.R, *self.gamma)
        x = -values if self.invert else values
        mean, std = x.mean(), x.std()
        low, span = x.min(), x.max() - x.min()
        x = ((x - low) / span.clamp(min=_EPS)) ** gamma * span + low
        if self.retain_stats:
            x = (x - x.mean()) * (std / x.std().clamp(min=_EPS)) + mean
        return -x if self.invert else x

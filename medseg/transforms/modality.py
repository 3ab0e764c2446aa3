"""Training with a modality missing: ``augment.modality_dropout_prob``.

With that probability per sample, a random non-empty *strict* subset of the image channels (modalities) is set to 0,
each of the ``2**C - 2`` such subsets equally likely, so at least one modality is always kept and a 1-channel image
is never touched. 0 is the channel's mean after z-score normalisation (what every MR channel and a CT channel get),
which is also how ``medseg infer --missing-modality`` fills a modality the case does not have and how
``dynunet_midfusion`` recognises a missing modality (a channel that is exactly zero over the whole patch), so its
mean-merge leaves it out instead of averaging zeros in.

It runs last in the augmentation pipeline (after noise, blur and intensity changes, which would make a zeroed
channel nonzero again), in the loader workers, drawn from the pipeline's random state, which the patch stream
reseeds for every batch: the same run seed gives the same dropped channels for any worker count.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform

log = logging.getLogger(__name__)

IMAGE = "image"


def draw_dropped_channels(random: np.random.RandomState, channels: int) -> tuple[int, ...]:
    """A uniformly drawn non-empty strict subset of ``range(channels)`` (rejection sampling of per-channel coin flips)."""
    if channels < 2:
        return ()
    while True:
        flips = random.randint(0, 2, size=channels)
        if 0 < int(flips.sum()) < channels:
            return tuple(int(index) for index in np.flatnonzero(flips))


class RandModalityDropoutd(RandomizableTransform, MapTransform):
    """With probability ``prob``, zero a random non-empty strict subset of the image's channels (never all)."""

    def __init__(self, prob: float, keys: Hashable = IMAGE, fill: float = 0.0) -> None:
        RandomizableTransform.__init__(self, prob=prob)
        MapTransform.__init__(self, [keys])
        self.fill = float(fill)
        self.dropped: tuple[int, ...] = ()

    def randomize(self, data: int | None = None) -> None:
        """``data``: the number of channels of the sample."""
        super().randomize(None)
        self.dropped = draw_dropped_channels(self.R, int(data or 0)) if self._do_transform else ()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        out = dict(data)
        first = next(iter(self.key_iterator(out)), None)
        if first is None:
            return out
        self.randomize(int(out[first].shape[0]))
        if not self.dropped:
            return out
        for key in self.key_iterator(out):
            image = torch.as_tensor(out[key]).clone()
            image[list(self.dropped)] = self.fill
            out[key] = image
        return out

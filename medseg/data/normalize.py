"""Intensity normalisation of one case, as the plan's per-channel schemes say.

CT: clip to the dataset foreground percentiles, z-score with the dataset statistics (HU mean the
same in every scan). MR and others: per-image z-score, inside the nonzero mask when the plan asks
(the zeros around a skull-stripped brain are not tissue). The values actually used are returned,
so a case can always be reproduced.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medseg.schema.case import ChannelNormalizationUsed
from medseg.schema.plan import ChannelNormalization


def nonzero_mask(image: np.ndarray) -> np.ndarray:
    """Voxels nonzero in any channel, holes filled (the body, not just its bright parts)."""
    return ndimage.binary_fill_holes(np.any(image != 0, axis=0))


def needs_nonzero_mask(schemes: Sequence[ChannelNormalization]) -> bool:
    return any(scheme.scheme == "zscore" and scheme.use_nonzero_mask for scheme in schemes)


def _zscore(data, mean: float, std: float) -> None:
    data -= mean
    data /= max(std, 1e-8)


def _clip_(data, low: float, high: float) -> None:
    if isinstance(data, np.ndarray):
        np.clip(data, low, high, out=data)
    else:  # a torch tensor (inference preprocesses on the GPU)
        data.clamp_(low, high)


def _mean_std(values) -> tuple[float, float]:
    """Mean and population standard deviation, the same arithmetic for numpy arrays and torch tensors."""
    mean = float(values.mean())
    return mean, float(((values - mean) ** 2).mean()) ** 0.5


def normalize(image, schemes: Sequence[ChannelNormalization], mask=None) -> tuple[np.ndarray, list[ChannelNormalizationUsed]]:
    """Normalize each channel of ``(C, ...)`` (a numpy array or a torch tensor) in place; return the values used."""
    used = []
    for channel, scheme in enumerate(schemes):
        data = image[channel]
        if scheme.scheme == "ct":
            lo, hi = scheme.clip  # type: ignore[misc]
            _clip_(data, lo, hi)
            _zscore(data, float(scheme.mean), float(scheme.std))  # type: ignore[arg-type]
            used.append(ChannelNormalizationUsed(scheme="ct", mean=scheme.mean, std=scheme.std, clip=[lo, hi]))
        elif scheme.scheme == "zscore":
            region = mask if scheme.use_nonzero_mask and mask is not None and mask.any() else None
            values = data[region] if region is not None else data
            mean, std = _mean_std(values)
            _zscore(data, mean, std)
            if region is not None:
                data[~region] = 0
            used.append(ChannelNormalizationUsed(scheme="zscore", mean=mean, std=std, masked=region is not None))
        elif scheme.scheme == "rescale":
            lo, hi = float(data.min()), float(data.max())
            data -= lo
            data /= max(hi - lo, 1e-8)
            used.append(ChannelNormalizationUsed(scheme="rescale", min=lo, max=hi))
        else:
            used.append(ChannelNormalizationUsed(scheme="none"))
    return image, used

"""The slow reference inverse of preprocessing, kept only as a test oracle.

It maps a model-grid array back with :mod:`medseg.data.resample` on a full-size canvas (labels
nearest or per-class linear, probabilities linear per class, background outside the crop), then
undoes the reorientation. The fast slab-wise inverse in :mod:`medseg.data.preprocess` must agree
with it.
"""

from __future__ import annotations

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff

from medseg.data.resample import Kind, resample_3d, resample_channels
from medseg.schema.case import CaseGeometry


def invert_to_raw(array: np.ndarray, geometry: CaseGeometry, kind: Kind) -> np.ndarray:
    """``kind``: ``label_nearest``/``label_linear`` for (X, Y, Z) label maps, ``probabilities`` for (C, X, Y, Z)."""
    if tuple(array.shape[-3:]) != tuple(geometry.resampled_shape):
        raise ValueError(f"array shape {array.shape} does not match the preprocessed grid {geometry.resampled_shape}")
    cropped, axis, ras_shape = tuple(geometry.cropped_shape), geometry.separate_axis, tuple(geometry.ras_shape)
    if kind.startswith("label"):
        back = resample_3d(array, cropped, kind, axis=axis)
        canvas = np.zeros(ras_shape, dtype=back.dtype)
        canvas[geometry.crop_region] = back
        channels = canvas[None]
    else:
        stack = array[None] if array.ndim == 3 else array
        back = resample_channels(stack, cropped, kind, axis=axis, image_order=1 if kind == "probabilities" else 3)
        channels = np.zeros((stack.shape[0], *ras_shape), dtype=np.float32)
        if kind == "probabilities":
            channels[0] = 1.0
        channels[(slice(None), *geometry.crop_region)] = back
    inverse = geometry.inverse_orientation()
    raw = np.ascontiguousarray(np.stack([apply_orientation(channel, inverse) for channel in channels]))
    return raw[0] if (kind.startswith("label") or array.ndim == 3) else raw


def raw_affine(geometry: CaseGeometry) -> np.ndarray:
    """The raw grid's affine recomputed from the RAS grid and the recorded reorientation (equals the original)."""
    return np.asarray(geometry.ras_affine) @ inv_ornt_aff(geometry.inverse_orientation(), geometry.ras_shape)

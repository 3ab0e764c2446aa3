"""Seeded synthetic masks for metric tests, and MONAI as the reference implementation."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def random_blob(rng: np.random.Generator, shape=(26, 30, 22), smooth: float = 2.5, fill: float = 0.3) -> np.ndarray:
    """A random blobby boolean mask (smoothed noise thresholded to ``fill`` of the voxels)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), smooth)
    return field > np.quantile(field, 1 - fill)


def perturbed(rng: np.random.Generator, mask: np.ndarray, amount: float = 0.6) -> np.ndarray:
    """A prediction-like variant of ``mask``: its smoothed indicator plus noise, re-thresholded."""
    field = ndimage.gaussian_filter(mask.astype(float), 1.5) + amount * ndimage.gaussian_filter(rng.standard_normal(mask.shape), 2.0)
    return field > 0.5


def sphere(shape, centre, radius_vox: float) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius_vox**2


def monai_metrics(pred: np.ndarray, ref: np.ndarray, spacing, tolerance: float) -> dict[str, float]:
    """Dice, HD, HD95, ASSD and NSD from MONAI 1.6.1 (torch imported here only, never in medseg.metrics)."""
    import torch
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric, SurfaceDistanceMetric

    def one_hot(mask: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))

    y_pred, y = one_hot(pred), one_hot(ref)
    spacing = tuple(float(s) for s in spacing)
    return {
        "dice": float(DiceMetric(include_background=False, ignore_empty=False)(y_pred, y)[0, 0]),
        "hd": float(HausdorffDistanceMetric(include_background=False)(y_pred, y, spacing=spacing)[0, 0]),
        "hd95": float(HausdorffDistanceMetric(include_background=False, percentile=95)(y_pred, y, spacing=spacing)[0, 0]),
        "assd": float(SurfaceDistanceMetric(include_background=False, symmetric=True)(y_pred, y, spacing=spacing)[0, 0]),
        "nsd": float(SurfaceDiceMetric([tolerance], include_background=False)(y_pred, y, spacing=spacing)[0, 0]),
    }

"""Seeded synthetic volumes with awkward geometry, shared by the I/O tests."""

from __future__ import annotations

import numpy as np

from medseg.io import Volume


def rotation(angles_deg) -> np.ndarray:
    """Rotation matrix from x, y, z Euler angles in degrees."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_affine(spacing=(0.7, 0.9, 3.3), angles=(12.0, -7.0, 25.0), origin=(-101.25, 37.5, -412.125), permutation=(0, 1, 2), flips=(1, 1, 1)) -> np.ndarray:
    """An oblique, anisotropic, optionally permuted/flipped RAS affine."""
    axes = rotation(angles)[:, list(permutation)] * np.asarray(flips, dtype=float)[None, :]
    affine = np.eye(4)
    affine[:3, :3] = axes * np.asarray(spacing, dtype=float)[None, :]
    affine[:3, 3] = origin
    return affine


def random_volume(rng: np.random.Generator, shape=(23, 17, 11), dtype=np.int16, affine=None) -> Volume:
    array = rng.integers(-1024, 2000, size=shape).astype(dtype)
    return Volume(array, oblique_affine() if affine is None else affine)

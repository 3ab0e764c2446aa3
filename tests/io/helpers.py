"""Seeded synthetic volumes with awkward geometry, shared by the I/O tests."""

from __future__ import annotations

import numpy as np
import pydicom
from scipy.ndimage import map_coordinates

from medseg.io import Volume, geometry
from medseg.io.dicom_write import write_dicom_series


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


# --- slice stacks placed slice by slice (gantry tilt, uneven spacing), holding a world-linear ramp ---------------
# Linear interpolation reproduces a linear ramp exactly, so a correct resampling gives the source values back at the
# source voxel centres (up to the DICOM storage step).

SHAPE = (20, 16, 9)  # columns, rows, slices
PIXEL = (0.7, 0.9)
STEP = 2.5
RAMP = np.array([0.8, -1.7, 2.3])  # value per mm along R, A, S


def base_affine(angles=(20.0, -35.0, 50.0), origin=(-12.3, 45.6, -78.9)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = rotation(angles) * np.asarray([*PIXEL, STEP])
    affine[:3, 3] = origin
    return affine


def slice_origins(affine: np.ndarray, along_mm, sideways_mm) -> np.ndarray:
    """RAS origin of each slice: ``along`` mm on the normal, ``sideways`` mm along the column direction."""
    column = affine[:3, 1] / np.linalg.norm(affine[:3, 1])
    normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    return affine[:3, 3] + np.outer(along_mm, normal) + np.outer(sideways_mm, column)


def source_centres(affine: np.ndarray, origins: np.ndarray, shape=SHAPE) -> np.ndarray:
    """World RAS centre of every source voxel, (columns, rows, slices, 3)."""
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    in_plane = i[..., None] * affine[:3, 0] + j[..., None] * affine[:3, 1]
    return in_plane[:, :, None, :] + origins[None, None, :, :]


def ramp(points: np.ndarray) -> np.ndarray:
    return 7.0 + points @ RAMP


def write_series(folder, along, sideways, values=None, modality="MR", shape=SHAPE, **tags):
    affine = base_affine()
    origins = slice_origins(affine, along, sideways)
    centres = source_centres(affine, origins, shape)
    array = ramp(centres).astype(np.float32) if values is None else values(centres)
    write_dicom_series(Volume(array, affine), folder, modality=modality, slice_origins=origins)
    if tags:
        for path in sorted(folder.glob("*.dcm")):
            ds = pydicom.dcmread(path)
            for key, value in tags.items():
                setattr(ds, key, value)
            ds.save_as(path)
    return centres, array


def sample(volume: Volume, points: np.ndarray, order: int = 1) -> np.ndarray:
    """``volume`` interpolated at world points (N, 3), through its own affine."""
    index = geometry.world_to_voxel(volume.affine, points.reshape(-1, 3))
    return map_coordinates(volume.array.astype(np.float64), index.T, order=order, mode="nearest")


def storage_step(folder) -> float:
    return float(pydicom.dcmread(next(folder.glob("*.dcm"))).RescaleSlope)


def assert_covers(volume: Volume, centres: np.ndarray) -> None:
    """Every source voxel centre lies inside the output grid (no source voxel was cropped)."""
    index = geometry.world_to_voxel(volume.affine, centres.reshape(-1, 3))
    assert index.min() > -1e-3 and (index <= np.asarray(volume.shape) - 1 + 1e-3).all()

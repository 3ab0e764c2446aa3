"""World-coordinate geometry: the only place where RAS (nibabel, medseg) and LPS (DICOM, ITK) meet.

Convention used everywhere in medseg: a volume's ``affine`` maps voxel indices ``(i, j, k)`` of its
array to **RAS+ world millimetres** (+x towards the patient's Right, +y Anterior, +z Superior),
exactly as nibabel does. DICOM and ITK describe the same points in LPS+ (+x Left, +y Posterior,
+z Superior). The two differ by negating the first two world axes, which is what
:data:`LPS_TO_RAS` does; no other module may flip world axes.
"""

from __future__ import annotations

import numpy as np
from nibabel.orientations import aff2axcodes

# diag(-1, -1, 1, 1) is its own inverse: it maps LPS to RAS and RAS to LPS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def affine_from_lps(spacing, origin_lps, direction_lps) -> np.ndarray:
    """RAS voxel-to-world affine from ITK/DICOM-style LPS spacing, origin and direction.

    ``direction_lps`` is a 3x3 matrix whose *columns* are the unit world directions of the
    voxel axes i, j, k (ITK convention); ``spacing`` is the voxel size along i, j, k in mm.
    """
    spacing = np.asarray(spacing, dtype=float).reshape(3)
    direction = np.asarray(direction_lps, dtype=float).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing[None, :]
    lps[:3, 3] = np.asarray(origin_lps, dtype=float).reshape(3)
    return LPS_TO_RAS @ lps


def lps_from_affine(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a RAS affine into ITK/DICOM LPS ``(spacing, origin, direction)``.

    The direction keeps any shear the affine has; callers that need an orthonormal direction
    (ITK writers) must check :func:`is_orthogonal` first.
    """
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=float)
    columns = lps[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    direction = columns / spacing[None, :]
    return spacing, lps[:3, 3].copy(), direction


def spacing_from_affine(affine: np.ndarray) -> np.ndarray:
    """Voxel size along each array axis in mm (column norms, so it is frame independent)."""
    return np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)


def is_orthogonal(affine: np.ndarray, tol: float = 1e-4) -> bool:
    """True when the voxel axes are mutually perpendicular (no shear, e.g. no gantry tilt)."""
    columns = np.asarray(affine, dtype=float)[:3, :3]
    unit = columns / np.linalg.norm(columns, axis=0)[None, :]
    return bool(np.allclose(unit.T @ unit, np.eye(3), atol=tol))


def orientation_code(affine: np.ndarray) -> str:
    """Three-letter RAS-convention code of the voxel axes, e.g. ``"RAS"``, ``"LPS"``, ``"PSR"``."""
    return "".join(code or "?" for code in aff2axcodes(affine))


def voxel_to_world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """World RAS coordinates (N, 3) of voxel indices (N, 3)."""
    ijk = np.asarray(ijk, dtype=float)
    return ijk @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


def world_to_voxel(affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Fractional voxel indices (N, 3) of world RAS points (N, 3)."""
    inverse = np.linalg.inv(np.asarray(affine, dtype=float))
    return np.asarray(xyz, dtype=float) @ inverse[:3, :3].T + inverse[:3, 3]


def corner_points(shape, affine: np.ndarray) -> np.ndarray:
    """World coordinates of the 8 corner voxel centres; two grids coincide iff these match."""
    corners = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    return voxel_to_world(affine, corners)


def reorientation(affine: np.ndarray, axcodes: str = "RAS") -> np.ndarray:
    """The nibabel ornt that permutes/flips an array with ``affine`` so its axes point along ``axcodes``.

    The one place that computes it: :meth:`medseg.io.Volume.reoriented`, dataset checks and
    preprocessing all call this (only axis order and direction change, never a world position).
    """
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    return ornt_transform(io_orientation(np.asarray(affine, dtype=float)), axcodes2ornt(tuple(axcodes)))


def reoriented_grid(shape, affine: np.ndarray, axcodes: str = "RAS") -> tuple[tuple[int, int, int], np.ndarray, np.ndarray]:
    """``(shape, affine, ornt)`` of the grid after reorienting to ``axcodes``, without touching voxels."""
    from nibabel.orientations import inv_ornt_aff

    transform = reorientation(affine, axcodes)
    new_shape = [0, 0, 0]
    for source, (target, _) in enumerate(transform):
        new_shape[int(target)] = int(shape[source])
    return tuple(new_shape), np.asarray(affine, dtype=float) @ inv_ornt_aff(transform, tuple(int(s) for s in shape[:3])), transform  # type: ignore[return-value]

"""RECIST-style axial diameters of a lesion mask, in world millimetres.

Definitions (RECIST 1.1 measures on axial slices):

* **long axis**: the longest in-plane diameter over all axial slices. Measured on the slice's
  pixel set as the longest distance between two points of its convex hull, where each pixel is
  its full square (corners at +-0.5 voxel), i.e. edge to edge as a caliper on the image would
  measure; a 10 x 4 pixel rectangle therefore measures its diagonal.
* **short axis**: on the same slice, the longest chord of that convex hull perpendicular to the
  long axis (for an ellipse: its minor axis).

"Axial" needs world orientation: pass masks in RAS orientation (``Volume.reoriented("RAS")``),
so that array axis 2 is the one closest to inferior-superior and slices ``[:, :, k]`` are axial.
In-plane distances use the affine's first two columns, so anisotropic (and sheared) pixels are
measured correctly. Concave lesions are measured on their convex hull.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, QhullError

_CORNERS = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])


def plane_matrix(affine: np.ndarray) -> np.ndarray:
    """2x2 matrix mapping in-slice index offsets (di, dj) to orthonormal in-plane mm coordinates."""
    columns = np.asarray(affine, dtype=float)[:3, :2]
    e1 = columns[:, 0] / np.linalg.norm(columns[:, 0])
    second = columns[:, 1] - (columns[:, 1] @ e1) * e1
    e2 = second / np.linalg.norm(second)
    return np.array([[columns[:, 0] @ e1, columns[:, 1] @ e1], [columns[:, 0] @ e2, columns[:, 1] @ e2]])


def _hull_points(section: np.ndarray, to_mm: np.ndarray) -> np.ndarray:
    """In-plane mm coordinates of the convex hull vertices of a 2D pixel set (pixels as squares)."""
    rows = np.flatnonzero(section.any(axis=1))
    sub = section[rows]
    first = sub.argmax(axis=1)
    last = sub.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
    # The hull of a pixel set is the hull of the first and last pixel of each row.
    centres = np.concatenate([np.stack([rows, first], 1), np.stack([rows, last], 1)]).astype(float)
    points = (centres[:, None, :] + _CORNERS[None, :, :]).reshape(-1, 2) @ to_mm.T
    try:
        return points[ConvexHull(points).vertices]
    except QhullError:  # cannot happen for full pixels, but keep all points if qhull disagrees
        return points


def _long_axis(hull: np.ndarray) -> tuple[float, np.ndarray]:
    differences = hull[:, None, :] - hull[None, :, :]
    lengths = np.sqrt((differences**2).sum(-1))
    i, j = np.unravel_index(np.argmax(lengths), lengths.shape)
    return float(lengths[i, j]), differences[i, j] / max(lengths[i, j], 1e-12)


def _perpendicular_chord(hull: np.ndarray, direction: np.ndarray) -> float:
    """Longest chord of the convex polygon ``hull`` perpendicular to ``direction``.

    The chord length is a concave piecewise-linear function of the position t along
    ``direction``, so its maximum sits at a vertex position.
    """
    normal = np.array([-direction[1], direction[0]])
    t, s = hull @ direction, hull @ normal
    start, end = np.arange(len(hull)), np.roll(np.arange(len(hull)), -1)
    t0, t1, s0, s1 = t[start], t[end], s[start], s[end]
    best = 0.0
    for position in t:
        low, high = np.minimum(t0, t1), np.maximum(t0, t1)
        crossing = (low <= position + 1e-9) & (position - 1e-9 <= high)
        span = t1 - t0
        with np.errstate(divide="ignore", invalid="ignore"):
            fraction = np.where(np.abs(span) > 1e-12, (position - t0) / span, 0.0)
        values = np.concatenate([(s0 + np.clip(fraction, 0, 1) * (s1 - s0))[crossing], s[np.abs(t - position) <= 1e-9]])
        if values.size:
            best = max(best, float(values.max() - values.min()))
    return best


def axial_diameters(mask: np.ndarray, affine: np.ndarray) -> dict[str, float | int]:
    """RECIST long and short axis (mm) of a 3D boolean mask in RAS orientation, and the slice used.

    ``affine`` only needs the right in-plane columns (a crop's affine works, translation is unused).
    Returns NaN diameters and slice -1 for an empty mask.
    """
    to_mm = plane_matrix(affine)
    best = {"long_axis_mm": np.nan, "short_axis_mm": np.nan, "axial_slice": -1}
    present = np.flatnonzero(mask.any(axis=(0, 1)))
    longest = -1.0
    for k in present:
        hull = _hull_points(mask[:, :, k], to_mm)
        length, direction = _long_axis(hull)
        if length > longest:
            longest = length
            best = {"long_axis_mm": length, "short_axis_mm": _perpendicular_chord(hull, direction), "axial_slice": int(k)}
    return best

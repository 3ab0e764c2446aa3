"""Put a gantry-tilted or unevenly spaced slice stack on a regular, orthogonal grid (as dcm2niix does).

A tilted CT gantry gives slices whose plane (ImageOrientationPatient) is not perpendicular to the
direction the slice origins (ImagePositionPatient) move in: the stack is sheared. Uneven gaps
between slices cannot be expressed by one affine either. Both would make a NIfTI affine lie, so the
stack is resampled onto a grid that keeps every source voxel's world position:

* in-plane axes and pixel spacing are the slices' own; the third axis is the slice normal
  (row x column), so the grid is orthogonal; output slice 0 lies in the plane of source slice 0;
* in-plane, the grid is widened to cover every source slice's footprint (tilt moves each slice
  sideways), on source slice 0's pixel lattice;
* along the normal, output slices sit at a regular step from the first source slice to the last.
  Uniform (tilted) stacks keep their step, so each output slice is one source slice shifted
  in-plane. Uneven stacks get the **smallest** gap between neighbouring slices (dcm2niix's choice:
  no source slice is undersampled), shrunk so that it divides the extent evenly (first and last
  output slices fall on the first and last source slices, nothing is extrapolated), and capped at
  twice the source slice count, as dcm2niix caps it, which bounds memory;
* each output voxel is interpolated (linear for images, nearest for labels) from the two source
  slices whose planes bracket it along the normal, each sampled in-plane at the same point. A
  world-linear intensity ramp is therefore reproduced exactly.

Output pixels outside every source slice (the corners a tilt uncovers) get the darkest source value
(dcm2niix does the same; 0 for labels); within half a pixel of a slice's edge the edge value is used.
Memory: the output array plus two in-plane slices, one pass over the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from medseg.io.geometry import affine_from_lps

Interpolation = Literal["linear", "nearest"]

# dcm2niix caps the equalised slice count at twice the source count.
MAX_SLICE_FACTOR = 2
# A grid this many times the source voxel count is not a tilted stack any more (hostile positions).
MAX_VOXEL_FACTOR = 8
_EPS_PX = 1e-3  # sub-pixel noise in in-plane offsets, in pixels


@dataclass(frozen=True)
class SliceStack:
    """Geometry of sorted slices: LPS unit axes, DICOM PixelSpacing (rows, columns), origins ascending along the normal."""

    row: np.ndarray
    column: np.ndarray
    normal: np.ndarray
    pixel_spacing: np.ndarray
    ipps: np.ndarray
    columns: int
    rows: int

    @property
    def positions(self) -> np.ndarray:
        return self.ipps @ self.normal

    def in_plane_offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """Each slice origin relative to slice 0, in pixels along the row and column directions."""
        offsets = self.ipps - self.ipps[0]
        return offsets @ self.row / self.pixel_spacing[1], offsets @ self.column / self.pixel_spacing[0]

    def sideways_mm(self) -> np.ndarray:
        """How far each slice origin lies off the line through slice 0 along the normal (tilt)."""
        offsets = self.ipps - self.ipps[0]
        along = offsets @ self.normal
        return np.linalg.norm(offsets - np.outer(along, self.normal), axis=1)

    def tilt_deg(self) -> float:
        """Angle between the slice normal and the direction from the first to the last slice origin."""
        along = float(self.positions[-1] - self.positions[0])
        return math.degrees(math.atan2(float(self.sideways_mm()[-1]), abs(along))) if len(self.ipps) > 1 else 0.0


@dataclass(frozen=True)
class GridCorrection:
    """What was done to a series to put it on a regular grid; goes to the log, ``meta`` and the sidecar."""

    tilt_deg: float | None  # None: no tilt corrected
    sideways_mm: float
    steps_mm: tuple[float, float] | None  # (smallest, largest) source gap; None: uniform spacing kept
    spacing_mm: float  # output slice spacing
    source_shape: tuple[int, int, int]
    shape: tuple[int, int, int]
    interpolation: Interpolation
    tilt_tag_deg: float | None = None  # GantryDetectorTilt, when the header has one

    def messages(self) -> list[str]:
        """One sentence per correction, as logged and written to the sidecar's ``warnings``."""
        grid = f"{'x'.join(map(str, self.source_shape))} -> {'x'.join(map(str, self.shape))} voxels, {self.interpolation} interpolation"
        notes = []
        if self.tilt_deg is not None:
            tag = f", GantryDetectorTilt {self.tilt_tag_deg:g} deg" if self.tilt_tag_deg is not None else ""
            notes.append(f"gantry tilt of {self.tilt_deg:.2f} deg (slice positions drift {self.sideways_mm:.4g} mm sideways{tag}): "
                         f"resampled onto an orthogonal grid along the slice normal ({grid})")
        if self.steps_mm is not None:
            notes.append(f"variable slice spacing ({self.steps_mm[0]:.4g} to {self.steps_mm[1]:.4g} mm between slices): "
                         f"resampled to a regular {self.spacing_mm:.4g} mm spacing ({grid})")
        return notes

    def as_meta(self) -> dict:
        """JSON-ready facts for ``Volume.meta['geometry_correction']``."""
        return {"gantry_tilt_deg": None if self.tilt_deg is None else round(self.tilt_deg, 4),
                "sideways_drift_mm": round(self.sideways_mm, 4),
                "source_slice_steps_mm": None if self.steps_mm is None else [round(s, 4) for s in self.steps_mm],
                "slice_spacing_mm": round(self.spacing_mm, 6), "source_shape": list(self.source_shape),
                "shape": list(self.shape), "interpolation": self.interpolation}


@dataclass(frozen=True)
class RegularGrid:
    """Where the resampled voxels lie: shape, RAS affine, and how the source maps onto it."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    starts: np.ndarray  # (K, 2): source slice k's fractional (i, j) index at output pixel (0, 0)
    source_positions: np.ndarray  # source slices along the normal, relative to slice 0 (mm, ascending)
    slice_positions: np.ndarray  # output slices, same frame
    step: float


def _output_slices(positions: np.ndarray, uniform_step: float | None) -> tuple[np.ndarray, np.ndarray, float]:
    """(source positions used, output positions, step), all relative to the first slice."""
    count = len(positions)
    if uniform_step is not None:  # tilt only: every output slice is a source slice (jitter within tolerance ignored)
        ideal = uniform_step * np.arange(count)
        return ideal, ideal.copy(), uniform_step
    relative = positions - positions[0]
    extent = float(relative[-1])
    smallest = float(np.diff(relative).min())
    slices = min(math.ceil(extent / smallest - 1e-6) + 1, MAX_SLICE_FACTOR * count)
    step = extent / (slices - 1)
    return relative, step * np.arange(slices), step


def plan_grid(stack: SliceStack, uniform_step: float | None, tilted: bool = True) -> RegularGrid:
    """The orthogonal grid covering every source voxel (see module docstring).

    ``uniform_step``: None when gaps vary. ``tilted=False`` ignores sideways drift below the tilt tolerance,
    as an untilted stack does, so that uneven spacing alone never shifts or widens the slices.
    """
    u, v = stack.in_plane_offsets()
    if not tilted:
        u, v = np.zeros_like(u), np.zeros_like(v)
    i0, j0 = math.floor(u.min() + _EPS_PX), math.floor(v.min() + _EPS_PX)
    i1 = math.ceil(u.max() + stack.columns - 1 - _EPS_PX)
    j1 = math.ceil(v.max() + stack.rows - 1 - _EPS_PX)
    source, output, step = _output_slices(stack.positions, uniform_step)
    shape = (i1 - i0 + 1, j1 - j0 + 1, len(output))
    origin = stack.ipps[0] + i0 * stack.pixel_spacing[1] * stack.row + j0 * stack.pixel_spacing[0] * stack.column
    spacing = (stack.pixel_spacing[1], stack.pixel_spacing[0], step)
    affine = affine_from_lps(spacing, origin, np.column_stack([stack.row, stack.column, stack.normal]))
    return RegularGrid(shape, affine, np.column_stack([i0 - u, j0 - v]), source, output, step)


def grid_growth(stack: SliceStack, grid: RegularGrid) -> float:
    """Output voxels per source voxel; callers refuse absurd grids before allocating them."""
    return float(np.prod(grid.shape, dtype=float) / (stack.columns * stack.rows * len(stack.ipps)))


def _sample_axis(plane: np.ndarray, axis: int, start: float, size: int, nearest: bool) -> tuple[np.ndarray, np.ndarray]:
    """``plane`` sampled at fractional indices start, start+1, ... along ``axis``, and which samples fall on it."""
    n = plane.shape[axis]
    index = start + np.arange(size)
    inside = (index >= -0.5 - _EPS_PX) & (index <= n - 0.5 + _EPS_PX)
    clamped = np.clip(index, 0, n - 1)
    if nearest:
        return np.take(plane, np.rint(clamped).astype(np.intp), axis=axis), inside
    low = np.minimum(np.floor(clamped).astype(np.intp), max(n - 2, 0))
    high = np.minimum(low + 1, n - 1)
    weight = (clamped - low).astype(np.float32)
    shape = [1, 1]
    shape[axis] = size
    weight = weight.reshape(shape)
    return np.take(plane, low, axis=axis) * (1 - weight) + np.take(plane, high, axis=axis) * weight, inside


def _shifted_slice(plane: np.ndarray, start: tuple[float, float], shape: tuple[int, int], nearest: bool, fill) -> np.ndarray:
    """One source slice (columns, rows) resampled onto the output's in-plane lattice."""
    along_i, inside_i = _sample_axis(plane, 0, start[0], shape[0], nearest)
    both, inside_j = _sample_axis(along_i, 1, start[1], shape[1], nearest)
    both[~(inside_i[:, None] & inside_j[None, :])] = fill
    return both


def _bracket(source: np.ndarray, position: float) -> tuple[int, float]:
    """Index of the source slice at or below ``position`` and the weight of the next one."""
    k = int(np.clip(np.searchsorted(source, position, side="right") - 1, 0, len(source) - 2))
    weight = (position - source[k]) / (source[k + 1] - source[k])
    return k, float(np.clip(weight, 0.0, 1.0))


def resample_stack(array: np.ndarray, grid: RegularGrid, interpolation: Interpolation) -> np.ndarray:
    """``array`` (columns, rows, slices) of the sorted source slices, on ``grid``.

    Linear results are rounded back to the source's integer type (HU stay integers, as in dcm2niix);
    float sources stay float32.
    """
    nearest = interpolation == "nearest"
    integer = np.issubdtype(array.dtype, np.integer)
    work = array.dtype if nearest else np.float32
    fill = 0 if nearest else array.min()
    out = np.empty(grid.shape, dtype=array.dtype if integer or nearest else np.float32)
    cache: dict[int, np.ndarray] = {}

    def shifted(k: int) -> np.ndarray:
        if k not in cache:
            for old in [key for key in cache if key < k - 1]:
                del cache[old]
            cache[k] = _shifted_slice(array[:, :, k].astype(work, copy=False), tuple(grid.starts[k]), grid.shape[:2], nearest, fill)
        return cache[k]

    for m, position in enumerate(grid.slice_positions):
        k, weight = _bracket(grid.source_positions, float(position))
        if nearest:
            values = shifted(k + int(weight >= 0.5))
        elif weight < 1e-6:
            values = shifted(k)
        elif weight > 1 - 1e-6:
            values = shifted(k + 1)
        else:
            values = shifted(k) * np.float32(1 - weight) + shifted(k + 1) * np.float32(weight)
        out[:, :, m] = np.rint(values) if integer and not nearest else values
    return out


def sample_source_frames(volume: np.ndarray, grid: RegularGrid, columns: int, rows: int) -> np.ndarray:
    """The inverse of :func:`resample_stack` for labels: ``volume`` on ``grid`` sampled (nearest) at every
    source slice's pixel centres, as frames ``(slice, row, column)`` of the sorted source slices.

    Source slice k's pixel (column c, row r) lies at output index (c - starts[k, 0], r - starts[k, 1]) in-plane
    and at its own position along the normal; a label map read with nearest interpolation therefore comes
    back exactly, except where an in-plane offset is exactly half a pixel.
    """
    frames = np.empty((len(grid.source_positions), rows, columns), dtype=volume.dtype)
    for k, position in enumerate(grid.source_positions):
        m = int(np.clip(np.rint(position / grid.step), 0, grid.shape[2] - 1))
        i = np.clip(np.rint(np.arange(columns) - grid.starts[k, 0]), 0, grid.shape[0] - 1).astype(np.intp)
        j = np.clip(np.rint(np.arange(rows) - grid.starts[k, 1]), 0, grid.shape[1] - 1).astype(np.intp)
        frames[k] = volume[:, :, m][np.ix_(i, j)].T
    return frames

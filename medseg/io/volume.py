"""The one in-memory volume type of medseg.

A :class:`Volume` is an array plus the RAS+ affine that maps its voxel indices to world millimetres
(see :mod:`medseg.io.geometry`). Spacing, origin, direction and orientation code are derived from
the affine, never stored twice, so they cannot disagree. 4D images keep channels on the last axis,
as NIfTI stores them.

``role`` says what the values mean: ``"image"`` intensities may be interpolated smoothly,
``"label"`` values are class indices and must only ever be resampled with nearest-neighbour (or
per-class) interpolation. Code that resamples reads the role instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from nibabel.orientations import apply_orientation

from medseg.io import geometry

Role = Literal["image", "label"]


@dataclass
class Volume:
    array: np.ndarray
    affine: np.ndarray
    role: Role = "image"
    # Non-identifying facts about the source: modality, format, series description, NIfTI
    # qform/sform codes... Never patient names, IDs or dates.
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=float)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if self.array.ndim not in (3, 4):
            raise ValueError(f"volume array must be 3D or 4D (channels last), got shape {self.array.shape}")

    # --- geometry derived from the affine -------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape[:3])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return 1 if self.array.ndim == 3 else int(self.array.shape[3])

    @property
    def spacing(self) -> np.ndarray:
        return geometry.spacing_from_affine(self.affine)

    @property
    def origin(self) -> np.ndarray:
        """World RAS position (mm) of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 RAS unit direction of each voxel axis, as columns."""
        return self.affine[:3, :3] / self.spacing[None, :]

    @property
    def orientation(self) -> str:
        return geometry.orientation_code(self.affine)

    @property
    def modality(self) -> str:
        return str(self.meta.get("modality", "unknown"))

    def split_channels(self) -> list[Volume]:
        """One 3D image volume per channel of a 4D volume (a 3D volume is its own single channel)."""
        if self.array.ndim == 3:
            return [self]
        return [Volume(self.array[..., c], self.affine, "image", dict(self.meta)) for c in range(self.channels)]

    def with_array(self, array: np.ndarray, role: Role | None = None) -> Volume:
        """Same grid, new voxel values (e.g. a mask predicted on this image)."""
        if array.shape[:3] != self.array.shape[:3]:
            raise ValueError(f"array shape {array.shape[:3]} does not match volume grid {self.shape}")
        return replace(self, array=array, role=role or self.role, meta=dict(self.meta))

    def same_grid(self, other: Volume, atol_mm: float = 1e-3) -> bool:
        """True when both volumes sample the same world points voxel for voxel."""
        return self.shape == other.shape and bool(
            np.allclose(
                geometry.corner_points(self.shape, self.affine),
                geometry.corner_points(other.shape, other.affine),
                atol=atol_mm,
            )
        )

    def reoriented(self, axcodes: str = "RAS", copy: bool = True) -> Volume:
        """Permute/flip the array axes (no interpolation) so that they point along ``axcodes``.

        World coordinates of every voxel are unchanged; only the index order changes.
        ``copy=False`` returns a strided view, for callers that copy anyway (saves one full pass).
        """
        _, affine, transform = geometry.reoriented_grid(self.shape, self.affine, axcodes)
        if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
            return self
        array = apply_orientation(self.array, transform)
        meta = {key: value for key, value in self.meta.items() if not key.startswith("nifti_")}
        return Volume(np.ascontiguousarray(array) if copy else array, affine, self.role, meta)


# Largest label value medseg stores (uint32); larger values are refused, never wrapped.
MAX_LABEL = int(np.iinfo(np.uint32).max)


def label_dtype(max_label: int) -> np.dtype:
    """Smallest unsigned integer type that stores every label value (up to :data:`MAX_LABEL`)."""
    if max_label < 0:
        raise ValueError("label maps cannot hold negative values")
    if max_label > MAX_LABEL:
        raise ValueError(f"label value {max_label} does not fit in uint32 (largest label {MAX_LABEL})")
    if max_label <= np.iinfo(np.uint8).max:
        return np.dtype(np.uint8)
    if max_label <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)

"""What preprocessing records about one case: :class:`CaseGeometry` (all the inverse needs) and
:class:`CaseProperties` (geometry plus normalisation and sampling facts), stored as ``<case>.json``.

The forward step (:func:`medseg.data.preprocess.preprocess_volume`) fills these; the inverse
(:mod:`medseg.data.roundtrip`) reads only :class:`CaseGeometry`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from medseg.schema.records import Record, read_record, write_record

Shape3 = tuple[int, int, int]


class CaseGeometry(Record):
    """The raw grid, the RAS grid, the crop and the resampled grid of one case, and how they relate."""

    original_shape: Shape3
    original_affine: list[list[float]]
    original_orientation: str
    orientation_transform: list[list[int]] = Field(description="nibabel ornt: raw axis i -> RAS axis [i][0], flipped if [i][1] < 0")
    ras_shape: Shape3
    ras_affine: list[list[float]]
    crop_bbox: list[tuple[int, int]] = Field(description="half-open [lo, hi) per RAS axis")
    cropped_shape: Shape3
    cropped_affine: list[list[float]]
    spacing_before: list[float]
    target_spacing: list[float]
    spacing_after: list[float]
    resampled_shape: Shape3
    resampled_affine: list[list[float]]
    separate_axis: int | None = Field(None, description="coarse axis resampled on its own (order 0), or None")

    @property
    def crop_region(self) -> tuple[slice, slice, slice]:
        return tuple(slice(lo, hi) for lo, hi in self.crop_bbox)  # type: ignore[return-value]

    def inverse_orientation(self) -> np.ndarray:
        """The nibabel ornt that takes a RAS-grid array back to the raw input's stored axis order."""
        transform = np.asarray(self.orientation_transform, dtype=float)
        inverse = np.zeros_like(transform)
        for source_axis, (target_axis, flip) in enumerate(transform):
            inverse[int(target_axis)] = [source_axis, flip]
        return inverse


class ChannelNormalizationUsed(Record):
    """The statistics actually applied to one channel (per-image z-score values differ per case)."""

    scheme: Literal["ct", "zscore", "none", "rescale"]
    mean: float | None = None
    std: float | None = None
    clip: list[float] | None = None
    masked: bool | None = None
    min: float | None = None
    max: float | None = None


class CaseSources(Record):
    images: list[str]
    label: str | None = None


class CaseProperties(Record):
    """Everything recorded about a preprocessed case; ``<case>.json`` in the cache."""

    case_id: str
    geometry: CaseGeometry
    label_resampling: str = "per_class_linear"
    normalization: list[ChannelNormalizationUsed] = Field(default_factory=list)
    class_locations: dict[int, list[list[int]]] = Field(default_factory=dict, description="sampled voxel coordinates per foreground class")
    classes_present: list[int] = Field(default_factory=list)
    preprocessing_hash: str | None = None
    sources: CaseSources | None = None

    def class_location_arrays(self) -> dict[int, np.ndarray]:
        """Class locations as ``(N, 3)`` int64 arrays, as the patch sampler wants them."""
        return {label: np.asarray(points, dtype=np.int64).reshape(-1, 3) for label, points in self.class_locations.items()}


def read_properties(path: str | Path) -> CaseProperties:
    return read_record(CaseProperties, path)


def write_properties(properties: CaseProperties, path: str | Path) -> Path:
    return write_record(properties, path, indent=None)

"""Human-readable summaries of volumes and DICOM folders (what `medseg info` shows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg.io.readers import read_volume


def describe_volume(volume) -> dict[str, Any]:
    """Geometry and intensity facts of a volume; contains no patient identifiers."""
    array = volume.array
    finite = np.isfinite(array) if np.issubdtype(array.dtype, np.floating) else None
    values = array[finite] if finite is not None and not finite.all() else array
    return {
        "source": volume.meta.get("source", ""),
        "format": volume.meta.get("format", "unknown"),
        "shape": list(volume.shape),
        "channels": volume.channels,
        "spacing_mm": [round(float(v), 6) for v in volume.spacing],
        "orientation": volume.orientation,
        "origin_ras_mm": [round(float(v), 4) for v in volume.origin],
        "direction_ras": np.round(volume.direction, 6).tolist(),
        "dtype": str(array.dtype),
        "intensity_range": [float(values.min()), float(values.max())] if values.size else [None, None],
        "non_finite_voxels": 0 if finite is None else int((~finite).sum()),
        "modality": volume.modality,
        "series_description": volume.meta.get("series_description"),
    }


def describe_path(path: str | Path, series: str | int | None = None) -> dict[str, Any]:
    """`describe_volume` of a file or DICOM folder, plus the series list for folders."""
    path = Path(path)
    info: dict[str, Any] = {}
    if path.is_dir():
        from medseg.io.dicom import list_dicom_series

        all_series = list_dicom_series(path)
        info["series"] = [
            {
                "index": item.index,
                "uid": item.uid,
                "description": item.description,
                "modality": item.modality,
                "slices": item.slice_count,
            }
            for item in all_series
        ]
        if len(all_series) > 1 and series is None:
            return info  # nothing to load until the user picks one; the list is the answer
    volume = read_volume(path, series=series, allow_channels=True)
    info.update(describe_volume(volume))
    return info

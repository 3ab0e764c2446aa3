"""Statistics of a segmentation without ground truth (for ``medseg infer`` outputs).

Per structure: voxel count, volume (mL), intensity mean/median/std/min/max inside it (HU for CT)
when the image is given, centroid in world RAS mm, and bounding box (voxel indices of the file's
array, inclusive, and world RAS mm of the voxel centres). Per lesion of the lesion labels:
volume, centroid and RECIST axial diameters (see :mod:`medseg.metrics.diameters`). This is what
TotalSegmentator's ``statistics.json`` gives (volume, mean intensity) plus the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.io.geometry import voxel_to_world
from medseg.io.volume import Volume
from medseg.metrics.case import c_ordered, crop_affine, find_labels, label_boxes, present_values
from medseg.metrics.config import EvaluateConfig
from medseg.metrics.labels import LabelSource, LabelSpec, inferred_specs, load_label_specs, resolve_keys
from medseg.metrics.lesions import components, describe_component
from medseg.metrics.overlap import voxel_volume_ml


def _specs(found, labels: LabelSource | list[LabelSpec], task: str | None) -> list[LabelSpec]:
    if isinstance(labels, list) and labels and isinstance(labels[0], LabelSpec):
        return labels
    specs = load_label_specs(labels, task)  # type: ignore[arg-type]
    return inferred_specs(present_values(found)) if specs is None else specs


def _fast_layout(seg: Volume, image: Volume | None) -> tuple[Volume, Volume | None, bool]:
    """C-ordered views of the segmentation (and image) in the same axis order; see case.c_ordered."""
    if image is None:
        seg, _, transposed = c_ordered(seg, seg)
        return seg, None, transposed
    return c_ordered(seg, image)


def _structure(seg: Volume, image: Volume | None, spec: LabelSpec, box, voxel_ml: float, transposed: bool = False) -> dict:
    if box is None:
        return {"index": spec.index, "voxels": 0, "volume_ml": 0.0}
    crop = seg.array[box]
    mask = crop == spec.values[0] if len(spec.values) == 1 else np.isin(crop, spec.values)
    offset = np.array([s.start for s in box])
    indices = np.argwhere(mask) + offset
    low, high = indices.min(axis=0), indices.max(axis=0)
    corners = np.array([[a, b, c] for a in (low[0], high[0]) for b in (low[1], high[1]) for c in (low[2], high[2])])
    world = voxel_to_world(seg.affine, corners)
    facts = {
        "index": spec.index,
        "voxels": int(len(indices)),
        "volume_ml": len(indices) * voxel_ml,
        "centroid_mm": voxel_to_world(seg.affine, indices.mean(axis=0)[None, :])[0].tolist(),
        # voxel indices of the array as stored in the file (undo the layout transpose)
        "bbox_voxel": {"min": (low[::-1] if transposed else low).tolist(), "max": (high[::-1] if transposed else high).tolist()},
        "bbox_mm": {"min": world.min(axis=0).tolist(), "max": world.max(axis=0).tolist()},
    }
    if image is not None:
        values = image.array[box][mask].astype(np.float64)
        facts["intensity"] = {
            "mean": float(values.mean()),
            "median": float(np.median(values)),
            "std": float(values.std()),
            "min": float(values.min()),
            "max": float(values.max()),
        }
    return facts


def segmentation_statistics(
    seg: Volume,
    image: Volume | None = None,
    labels: LabelSource | list[LabelSpec] = None,
    lesion_labels: Iterable[int | str] = (),
    config: EvaluateConfig | None = None,
    label_task: str | None = None,
) -> dict:
    """Per-structure (and per-lesion) statistics of a label map; ``image`` adds intensity statistics.

    ``labels`` as for :func:`medseg.metrics.evaluate.evaluate` (None: every value present).
    Lesion components follow ``config.connectivity`` and ``config.lesion_min_voxels``.
    """
    config = config or EvaluateConfig()
    header = {
        "source": seg.meta.get("source"),
        "image": None if image is None else image.meta.get("source", "in-memory image"),
        "shape": list(seg.shape),
        "spacing_mm": seg.spacing.tolist(),
        "orientation": seg.orientation,
        "voxel_volume_ml": voxel_volume_ml(seg.affine),
    }
    if image is not None:
        if image.array.ndim != 3:
            raise InputError(image.meta.get("source"), f"image must be 3D for statistics, got shape {image.array.shape}")
        if not image.same_grid(seg):
            raise InputError(
                seg.meta.get("source", "segmentation"),
                f"is not on the image's grid ({image.meta.get('source', 'image')}): shape {seg.shape} vs {image.shape}, "
                f"spacing {tuple(np.round(seg.spacing, 4))} vs {tuple(np.round(image.spacing, 4))}",
            )
    seg, image, transposed = _fast_layout(seg, image)
    found = find_labels(seg.array)  # one pass: every label's bounding box
    specs = _specs(found, labels, label_task)
    lesion_specs = resolve_keys(specs, lesion_labels, "lesion_labels")
    voxel_ml = voxel_volume_ml(seg.affine)
    boxes = label_boxes(found, specs)
    structures = {spec.name: _structure(seg, image, spec, boxes[spec.name], voxel_ml, transposed) for spec in specs}
    lesions = {spec.name: _lesions(seg, spec, boxes[spec.name], config, voxel_ml) for spec in lesion_specs}
    return {
        **header,
        "structures": structures,
        "lesions": lesions,
    }


def _lesions(seg: Volume, spec: LabelSpec, box, config: EvaluateConfig, voxel_ml: float) -> list[dict]:
    if box is None:
        return []
    crop = seg.array[box]
    mask = crop == spec.values[0] if len(spec.values) == 1 else np.isin(crop, spec.values)
    labelled, found = components(mask, config.connectivity, config.lesion_min_voxels)
    affine = crop_affine(seg.affine, box)
    rows = []
    for component in found:
        facts = describe_component(labelled, component, affine, voxel_ml)
        rows.append({"lesion": component.id, "size_bin": config.size_bin(facts["volume_ml"]), **facts})
    return rows


def statistics_rows(statistics: dict) -> tuple[list[dict], list[dict]]:
    """Flatten statistics into table rows: (one per structure, one per lesion)."""
    structures = []
    for name, facts in statistics["structures"].items():
        row = {"label": name, "label_index": facts["index"], "voxels": facts["voxels"], "volume_ml": facts["volume_ml"]}
        if "centroid_mm" in facts:
            row.update({f"centroid_{axis}_mm": value for axis, value in zip("xyz", facts["centroid_mm"])})
        for key, value in facts.get("intensity", {}).items():
            row[f"intensity_{key}"] = value
        structures.append(row)
    lesions = [{"label": name, **row} for name, rows in statistics["lesions"].items() for row in rows]
    return structures, lesions


STRUCTURE_COLUMNS = [
    "label", "label_index", "voxels", "volume_ml", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm",
    "intensity_mean", "intensity_median", "intensity_std", "intensity_min", "intensity_max",
]  # fmt: skip
STAT_LESION_COLUMNS = [
    "label", "lesion", "voxels", "volume_ml", "size_bin", "long_axis_mm", "short_axis_mm", "axial_z_mm",
    "centroid_x_mm", "centroid_y_mm", "centroid_z_mm",
]  # fmt: skip


def write_statistics(statistics: dict, out: str | Path) -> list[Path]:
    """``out`` ending in .json: that one file; otherwise a folder with statistics.json, structures.csv, lesions.csv."""
    from medseg.metrics.outputs import write_csv, write_json

    out = Path(out)
    if out.suffix.lower() == ".json":
        return [write_json(statistics, out)]
    out.mkdir(parents=True, exist_ok=True)
    structures, lesions = statistics_rows(statistics)
    return [
        write_json(statistics, out / "statistics.json"),
        write_csv(structures, STRUCTURE_COLUMNS, out / "structures.csv"),
        write_csv(lesions, STAT_LESION_COLUMNS, out / "lesions.csv"),
    ]

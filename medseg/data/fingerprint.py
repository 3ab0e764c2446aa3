"""Dataset fingerprint: the facts about a dataset that planning needs, computed once and saved as JSON.

Per case (after reorienting to RAS and cropping to the nonzero region, exactly as preprocessing
will): spacing, shape before and after the crop, the share of voxels the crop kept, voxels per
class. Per channel: intensity statistics of the *foreground* (labelled) voxels, which is what
CT normalization needs. Memory stays bounded because each case contributes at most
``samples_per_case`` randomly chosen foreground voxels (seeded, so fingerprints are reproducible).
Plan and train fingerprint through :func:`load_or_compute_fingerprint`, which refuses a label value
that dataset.json does not declare (:func:`check_declared_labels`), as `medseg dataset check` does.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medseg.io.atomic import write_json
from medseg.schema.records import read_json
from medseg.data.check import undeclared_labels
from medseg.data.config import FingerprintConfig
from medseg.data.dataset import Case, DatasetDescription, read_case_images, read_case_label
from medseg.data.parallel import map_cases
from medseg.data.preprocess import crop, nonzero_bbox, to_canonical, case_rng
from medseg.errors import InputError
from medseg.io.geometry import orientation_code

log = logging.getLogger(__name__)

FINGERPRINT_VERSION = 1


def _stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "median": float("nan"), "min": float("nan"), "max": float("nan"), "percentile_00_5": float("nan"), "percentile_99_5": float("nan")}
    values = values.astype(np.float64, copy=False)
    low, median, high = np.percentile(values, [0.5, 50.0, 99.5])
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "median": float(median),
        "min": float(values.min()),
        "max": float(values.max()),
        "percentile_00_5": float(low),
        "percentile_99_5": float(high),
    }


def fingerprint_case(argument: tuple[dict[str, Any], int, int, int]) -> dict[str, Any]:
    """Facts about one case; runs in a worker process (hence the plain-data argument)."""
    case_data, num_channels, samples_per_case, seed = argument
    case = Case.from_dict(case_data)
    images = read_case_images(case, num_channels)
    label = read_case_label(case)
    canonical = to_canonical(images, label)
    bad = ~np.isfinite(canonical.image)
    if bad.any():
        raise InputError(case.images[0], f"image has {int(bad.sum())} NaN/inf voxels")
    bbox = nonzero_bbox(canonical.image, canonical.label)
    image = crop(canonical.image, bbox)
    raw_shape = canonical.image.shape[1:]
    cropped_shape = image.shape[1:]
    record: dict[str, Any] = {
        "case_id": case.case_id,
        "orientation": orientation_code(canonical.original_affine),
        "spacing": [float(s) for s in canonical.spacing],
        "shape_raw": [int(n) for n in raw_shape],
        "shape_cropped": [int(n) for n in cropped_shape],
        "crop_fraction": float(np.prod(cropped_shape) / np.prod(raw_shape)),
    }
    samples = np.zeros((num_channels, 0), dtype=np.float32)
    if canonical.label is not None:
        seg = crop(canonical.label, bbox)
        counts = np.bincount(seg.reshape(-1).astype(np.int64))
        record["class_voxels"] = {str(value): int(n) for value, n in enumerate(counts) if n}
        foreground = np.flatnonzero(seg.reshape(-1) > 0)
        flat = image.reshape(num_channels, -1)
        record["foreground_voxels"] = int(len(foreground))
        record["intensity"] = [_stats(flat[c, foreground]) for c in range(num_channels)]
        if len(foreground) > samples_per_case:
            foreground = case_rng(seed, case.case_id).choice(foreground, samples_per_case, replace=False)
        samples = flat[:, foreground].astype(np.float32)
    record["_samples"] = samples
    return record


def dataset_digest(description: DatasetDescription, config: FingerprintConfig) -> str:
    """Changes whenever a case file (path, size, mtime) or the fingerprint settings change."""
    digest = hashlib.sha256()
    digest.update(json.dumps(config.model_dump(), sort_keys=True).encode())
    for case in description.cases:
        digest.update(case.case_id.encode())
        for path in case.sources():
            try:
                stat = path.stat()
                digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
            except OSError:
                digest.update(f"{path}:missing".encode())
    return digest.hexdigest()[:16]


def compute_fingerprint(
    description: DatasetDescription,
    config: FingerprintConfig | None = None,
    *,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Fingerprint of the training cases; any unreadable case is an :class:`InputError` listing them all."""
    config = config or FingerprintConfig()
    if not description.cases:
        raise InputError(description.root, "has no training cases to fingerprint")
    items = [(case.case_id, (case.to_dict(), description.num_channels, config.samples_per_case, config.seed)) for case in description.cases]
    records: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for outcome in map_cases(fingerprint_case, items, workers=workers, description="fingerprint", progress=progress):
        if outcome.ok:
            records[outcome.key] = outcome.value
        else:
            failures.append(f"{outcome.key}: {outcome.error}")
    if failures:
        failures.sort()
        shown = "; ".join(failures[:5]) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else "")
        raise InputError(description.root, f"{len(failures)} case(s) could not be read ({shown}); run `medseg dataset check` for details")
    cases = [records[case.case_id] for case in description.cases]
    samples = np.concatenate([record.pop("_samples") for record in cases], axis=1)
    if samples.shape[1] == 0:
        log.warning("%s: no labelled foreground voxels in any case; intensity statistics are empty", description.root)
    class_voxels: dict[str, int] = {}
    cases_with_class: dict[str, int] = {}
    for record in cases:
        for value, count in record.get("class_voxels", {}).items():
            class_voxels[value] = class_voxels.get(value, 0) + count
            cases_with_class[value] = cases_with_class.get(value, 0) + 1
    total = max(sum(class_voxels.values()), 1)
    spacings = np.array([record["spacing"] for record in cases])
    shapes = np.array([record["shape_cropped"] for record in cases])
    return {
        "fingerprint_version": FINGERPRINT_VERSION,
        "dataset": description.name,
        "format": description.format,
        "digest": dataset_digest(description, config),
        "settings": config.model_dump(),
        "num_cases": len(cases),
        "channels": [{"index": i, "name": n, "modality": m} for i, (n, m) in enumerate(zip(description.channel_names, description.modalities))],
        "labels": {str(k): v for k, v in sorted(description.labels.items())},
        "orientation": "RAS",
        "median_spacing": [float(v) for v in np.median(spacings, axis=0)],
        "median_shape_cropped": [float(v) for v in np.median(shapes, axis=0)],
        "median_crop_fraction": float(np.median([record["crop_fraction"] for record in cases])),
        "orientations": sorted({record["orientation"] for record in cases}),
        "intensity_foreground": [_stats(samples[c]) | {"samples": int(samples.shape[1])} for c in range(description.num_channels)],
        "class_voxels": dict(sorted(class_voxels.items(), key=lambda item: int(item[0]))),
        "class_frequency": {value: count / total for value, count in sorted(class_voxels.items(), key=lambda item: int(item[0]))},
        "cases_with_class": dict(sorted(cases_with_class.items(), key=lambda item: int(item[0]))),
        "cases": cases,
    }


def check_declared_labels(description: DatasetDescription, fingerprint: dict[str, Any]) -> None:
    """Refuse a label value that dataset.json does not declare, naming the first label map holding one.

    `medseg dataset check` reports the same problem in the same words; plan and train (which both
    fingerprint) must not plan a dataset whose classes they would then miscount. The fingerprint
    already counts every value of every label map (the crop keeps all labelled voxels), so nothing is
    read again, and a reused fingerprint is checked too: dataset.json may change while the label files do not.
    """
    label_files = {case.case_id: case.label for case in description.cases}
    found = []
    for record in fingerprint["cases"]:
        problem = undeclared_labels((int(value) for value in record.get("class_voxels", {})), description.label_values)
        if problem:
            found.append((record["case_id"], problem))
    if found:
        case_id, problem = found[0]
        more = f"; {len(found) - 1} more case(s) like it" if len(found) > 1 else ""
        raise InputError(label_files.get(case_id) or description.root, f"{problem}{more}; `medseg dataset check` lists every problem")


def save_fingerprint(fingerprint: dict[str, Any], path: str | Path) -> Path:
    return write_json(path, fingerprint)


def load_or_compute_fingerprint(
    description: DatasetDescription,
    path: str | Path | None,
    config: FingerprintConfig | None = None,
    *,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Reuse ``path`` when it was computed from the same files with the same settings; else recompute and save.

    What plan and train fingerprint through: either way, a label value dataset.json does not declare is refused.
    """
    config = config or FingerprintConfig()
    if path is not None and Path(path).is_file():
        try:
            stored = read_json(path)
        except InputError as error:
            log.info("ignoring unreadable fingerprint %s (%s)", path, error.problem)
        else:
            if stored.get("digest") == dataset_digest(description, config) and stored.get("fingerprint_version") == FINGERPRINT_VERSION:
                log.info("reusing fingerprint %s (dataset files unchanged)", path)
                check_declared_labels(description, stored)
                return stored
            log.info("fingerprint %s is stale (dataset files or settings changed); recomputing", path)
    fingerprint = compute_fingerprint(description, config, workers=workers, progress=progress)
    check_declared_labels(description, fingerprint)  # before saving: a refused dataset leaves nothing behind
    if path is not None:
        save_fingerprint(fingerprint, path)
    return fingerprint

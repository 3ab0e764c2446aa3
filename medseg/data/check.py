"""Validate a raw dataset and report *every* problem at once (``medseg dataset check``).

Errors make the dataset unusable as it is (a missing label, a label grid that does not match
its image, undeclared label values, NaN intensities); warnings are worth knowing but harmless
(an empty label map, labels stored as floats). A case that cannot be read becomes a problem
naming the file, never a crash, so one bad file does not hide the others.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from medseg.data.dataset import Case, DatasetDescription, load_dataset
from medseg.data.preprocess import GRID_TOLERANCE_MM
from medseg.errors import MedsegError
from medseg.io.geometry import corner_points, reoriented_grid
from medseg.io.readers import read_volume
from medseg.io.volume import Volume

log = logging.getLogger(__name__)

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    severity: Severity
    case: str  # case id, or "(dataset)" for dataset-level problems
    check: str  # short machine-readable name, e.g. "missing_label", "shape_mismatch"
    message: str
    path: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


DATASET = "(dataset)"


def _read(path: Path, case: str, problems: list[Problem], allow_channels: bool) -> Volume | None:
    if not path.exists():
        problems.append(Problem("error", case, "missing_file", "file does not exist", str(path)))
        return None
    try:
        return read_volume(path, role="image", allow_channels=allow_channels)
    except MedsegError as error:
        problems.append(Problem("error", case, "unreadable", getattr(error, "problem", str(error)), str(path)))
    except Exception as error:  # a reader bug must not hide the other cases' problems
        problems.append(Problem("error", case, "unreadable", f"{type(error).__name__}: {error}", str(path)))
    return None


def _corner_distance(a: Volume, b: Volume) -> float:
    return float(np.abs(corner_points(a.shape, a.affine) - corner_points(b.shape, b.affine)).max())


def _ras_grid(volume: Volume) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine the volume would have after reorienting to RAS (without touching voxels)."""
    shape, affine, _ = reoriented_grid(volume.shape, volume.affine, "RAS")
    return shape, affine


def _same_ras_grid(a: Volume, b: Volume, tolerance: float) -> bool:
    (shape_a, affine_a), (shape_b, affine_b) = _ras_grid(a), _ras_grid(b)
    return shape_a == shape_b and bool(np.abs(corner_points(shape_a, affine_a) - corner_points(shape_b, affine_b)).max() <= tolerance)


def _compare_grid(image: Volume, other: Volume, case: str, what: str, path: Path, tolerance: float, problems: list[Problem]) -> None:
    if image.shape == other.shape and _corner_distance(image, other) <= tolerance:
        return
    if _same_ras_grid(image, other, tolerance):
        problems.append(Problem("warning", case, "orientation_differs", f"{what} stored as {other.orientation} {other.shape}, image as {image.orientation} {image.shape}; same grid after reorienting", str(path)))
    elif image.shape != other.shape:
        problems.append(Problem("error", case, "shape_mismatch", f"{what} shape {other.shape} != image shape {image.shape}", str(path)))
    else:
        distance = _corner_distance(image, other)
        problems.append(Problem("error", case, "affine_mismatch", f"{what} affine differs from the image's (corners up to {distance:.3g} mm apart, tolerance {tolerance:g} mm)", str(path)))


def undeclared_labels(values: Iterable[int], declared: Iterable[int]) -> str | None:
    """The problem of a label map holding ``values`` when dataset.json declares ``declared`` (None: all declared).

    The one wording of this error, for `medseg dataset check` and for plan/train (the fingerprint refuses with it).
    """
    declared = set(declared)
    undeclared = sorted(set(values) - declared)
    return f"label values {undeclared} are not declared in dataset.json (declared: {sorted(declared)})" if undeclared else None


def _check_label(label: Volume, declared: set[int], case: str, path: Path, problems: list[Problem]) -> None:
    array = label.array
    if array.ndim != 3:
        problems.append(Problem("error", case, "label_not_3d", f"label map has shape {array.shape}; expected 3D", str(path)))
        return
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            problems.append(Problem("error", case, "label_nan", f"label map has {int((~finite).sum())} NaN/inf voxels", str(path)))
            return
        off = float(np.abs(array - np.rint(array)).max()) if array.size else 0.0
        if off > 1e-3:
            problems.append(Problem("error", case, "label_not_integer", f"label map has non-integer values (up to {off:.3g} off)", str(path)))
            return
        problems.append(Problem("warning", case, "float_label", f"label map stored as {array.dtype}; its integer values are accepted and converted", str(path)))
        array = np.rint(array)
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        problems.append(Problem("error", case, "label_dtype", f"label map has unsupported voxel type {array.dtype}", str(path)))
        return
    values = set(int(v) for v in np.unique(array))
    undeclared = undeclared_labels(values, declared)
    if undeclared:
        problems.append(Problem("error", case, "undeclared_label", undeclared, str(path)))
    if values <= {0}:
        problems.append(Problem("warning", case, "empty_label", "label map has no foreground voxels", str(path)))


def check_case(case: Case, description: DatasetDescription, labelled: bool = True, tolerance_mm: float = GRID_TOLERANCE_MM) -> list[Problem]:
    """Every problem of one case (reads its files once)."""
    problems: list[Problem] = []
    cid = case.case_id
    channels: list[tuple[Volume, Path]] = []
    single_file = case.multichannel_file or (len(case.images) == 1 and description.num_channels > 1)
    if not single_file and len(case.images) != description.num_channels:
        problems.append(Problem("error", cid, "channel_count", f"{len(case.images)} channel file(s), dataset.json declares {description.num_channels}", str(case.images[0])))
    for path in case.images:
        volume = _read(path, cid, problems, allow_channels=single_file)
        if volume is None:
            continue
        if single_file and volume.channels != description.num_channels:
            problems.append(Problem("error", cid, "channel_count", f"image has {volume.channels} channel(s), dataset.json declares {description.num_channels}", str(path)))
        finite = np.isfinite(volume.array)
        if not finite.all():
            problems.append(Problem("error", cid, "image_nan", f"image has {int((~finite).sum())} NaN/inf voxels", str(path)))
        channels.append((volume, path))
    reference = channels[0][0] if channels else None
    for volume, path in channels[1:]:
        _compare_grid(reference, volume, cid, "channel", path, tolerance_mm, problems)
    if not labelled:
        return problems
    if case.label is None or not case.label.exists():
        problems.append(Problem("error", cid, "missing_label", "label file does not exist", str(case.label) if case.label else None))
        return problems
    label = _read(case.label, cid, problems, allow_channels=True)
    if label is None:
        return problems
    _check_label(label, set(description.label_values), cid, case.label, problems)
    if reference is not None:
        _compare_grid(reference, label, cid, "label", case.label, tolerance_mm, problems)
    return problems


def _dataset_problems(description: DatasetDescription) -> list[Problem]:
    problems = []
    if not description.cases:
        problems.append(Problem("error", DATASET, "no_cases", "no training cases found (imagesTr/ empty or missing?)", str(description.root)))
    if 0 not in description.labels:
        problems.append(Problem("warning", DATASET, "no_background", "labels do not declare 0 (background)", str(description.root / "dataset.json")))
    declared = description.declared_num_training
    if declared is not None and declared != len(description.cases):
        problems.append(Problem("warning", DATASET, "num_training", f"numTraining is {declared} but {len(description.cases)} training cases were found", str(description.root / "dataset.json")))
    seen: set[str] = set()
    for case in description.cases:
        if case.case_id in seen:
            problems.append(Problem("error", case.case_id, "duplicate_case", "case id appears more than once", str(case.images[0])))
        seen.add(case.case_id)
    return problems


def check_dataset(root: str | Path, *, workers: int = 2, include_test: bool = True, tolerance_mm: float = GRID_TOLERANCE_MM) -> list[Problem]:
    """All problems of the dataset at ``root``; an empty list means it is ready for planning.

    Cases are read in ``workers`` threads (file decompression and numpy release the GIL).
    """
    try:
        description = load_dataset(root)
    except MedsegError as error:
        return [Problem("error", DATASET, "dataset_json", getattr(error, "problem", str(error)), str(getattr(error, "path", root)))]
    problems = _dataset_problems(description)
    jobs = [(case, True) for case in description.cases] + ([(case, False) for case in description.test_cases] if include_test else [])
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for found in pool.map(lambda job: check_case(job[0], description, job[1], tolerance_mm), jobs):
            problems.extend(found)
    log.debug("%s: checked %d case(s), %d problem(s)", root, len(jobs), len(problems))
    return problems


def has_errors(problems: list[Problem]) -> bool:
    return any(problem.severity == "error" for problem in problems)

"""The preprocessed-case cache: one folder of memory-mappable arrays per plan grid, built idempotently.

Layout (``<id>`` is the case id)::

    cache/                 one per grid: ``preprocessed`` (the plan's), ``preprocessed_<spacing>mm`` (3d_lowres)
      plan.json            the plan the cache was built with
      cache_info.json      its preprocessing identity, grid, dataset name, cache version
      <id>.npy             float32 image, channels first (C, X, Y, Z); np.load(mmap_mode="r") works
      <id>_seg.npy         uint8/uint16 label map (X, Y, Z)
      <id>.json            CaseProperties: the case geometry (all the inverse needs), normalisation, class locations
      <id>.done            written last: preprocessing identity + source file sizes/mtimes

A case is skipped when its ``.done`` marker matches the configuration's preprocessing identity
(:meth:`medseg.schema.Plan.preprocessing_identity`, the one place it is computed) and its source
files are unchanged; a changed plan or a new medseg cache layout therefore recomputes every case
(and says why). Every file is written atomically, so an interrupted run leaves no half-written
case behind.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.dataset import Case, DatasetDescription, read_case_images, read_case_label
from medseg.data.parallel import map_cases
from medseg.data.preprocess import preprocess_volume
from medseg.errors import InputError
from medseg.io.atomic import atomic_path, write_json
from medseg.schema.case import CaseProperties, CaseSources, read_properties, write_properties
from medseg.schema.plan import CACHE_VERSION, Configuration, Plan, read_plan, write_plan
from medseg.schema.records import Record, read_record, write_record

log = logging.getLogger(__name__)

INFO_FILE = "cache_info.json"
PLAN_FILE = "plan.json"


class CacheInfo(Record):
    """``cache_info.json``: which plan, grid and medseg cache layout the cached arrays belong to."""

    cache_version: int
    preprocessing_hash: str
    dataset: str
    configuration: str | None = None
    target_spacing: list[float] | None = None


def save_array(path: str | Path, array: np.ndarray) -> Path:
    """Atomic ``np.save`` (the temporary file keeps the .npy suffix so numpy adds none)."""
    path = Path(path)
    with atomic_path(path) as temporary:
        np.save(temporary, np.ascontiguousarray(array), allow_pickle=False)
    return path


def case_paths(cache_dir: str | Path, case_id: str) -> dict[str, Path]:
    cache_dir = Path(cache_dir)
    return {
        "image": cache_dir / f"{case_id}.npy",
        "seg": cache_dir / f"{case_id}_seg.npy",
        "properties": cache_dir / f"{case_id}.json",
        "done": cache_dir / f"{case_id}.done",
    }


def source_stamp(case: Case) -> dict[str, list[int]]:
    stamp = {}
    for path in case.sources():
        stat = path.stat()
        stamp[str(path)] = [int(stat.st_size), int(stat.st_mtime_ns)]
    return stamp


def case_status(cache_dir: str | Path, case: Case, plan_hash: str) -> str | None:
    """None when the cached case is complete and current, else why it must be (re)computed."""
    paths = case_paths(cache_dir, case.case_id)
    if not paths["done"].is_file():
        return "not cached yet"
    try:
        marker = json.loads(paths["done"].read_text())
    except (OSError, json.JSONDecodeError):
        return "unreadable done marker"
    if marker.get("preprocessing_hash") != plan_hash:
        return f"built with plan hash {marker.get('preprocessing_hash')}, current plan is {plan_hash}"
    needed = ("image", "properties") + (("seg",) if case.label is not None else ())
    missing = [name for name in needed if not paths[name].is_file()]
    if missing:
        return f"missing {', '.join(missing)} file(s)"
    try:
        if marker.get("sources") != source_stamp(case):
            return "source files changed"
    except OSError:
        return "source files changed"
    return None


def preprocess_case_to_cache(argument: tuple[dict[str, Any], int, dict[str, Any], str, str, str]) -> dict[str, Any]:
    """Worker: preprocess one case and write its files, the done marker last."""
    case_data, num_channels, plan_data, configuration, cache_dir, plan_hash = argument
    case = Case.from_dict(case_data)
    plan = Plan.model_validate(plan_data)
    images = read_case_images(case, num_channels)
    label = read_case_label(case)
    result = preprocess_volume(images, plan, configuration, label=label, case_id=case.case_id)
    paths = case_paths(cache_dir, case.case_id)
    paths["done"].unlink(missing_ok=True)
    properties = result.properties.model_copy(update={
        "preprocessing_hash": plan_hash,
        "sources": CaseSources(images=[str(p) for p in case.images], label=None if case.label is None else str(case.label)),
    })
    save_array(paths["image"], result.image)
    if result.seg is not None:
        save_array(paths["seg"], result.seg)
    write_properties(properties, paths["properties"])
    write_json(paths["done"], {"preprocessing_hash": plan_hash, "sources": source_stamp(case)})
    return {"shape": list(result.image.shape[1:]), "classes_present": properties.classes_present}


@dataclass
class PreprocessReport:
    cache_dir: Path
    plan_hash: str
    processed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    invalidated: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed


def _check_cache_info(cache_dir: Path, plan_hash: str, dataset: str) -> str | None:
    info_path = cache_dir / INFO_FILE
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text())
    except (OSError, json.JSONDecodeError):
        return "unreadable cache_info.json"
    if info.get("cache_version") != CACHE_VERSION:
        return f"it was built with another medseg cache layout (version {info.get('cache_version')}, now {CACHE_VERSION})"
    if info.get("preprocessing_hash") != plan_hash:
        return f"the plan changed (cache built with preprocessing hash {info.get('preprocessing_hash')}, plan now {plan_hash})"
    if info.get("dataset") != dataset:
        return f"the cache belongs to dataset {info.get('dataset')!r}, not {dataset!r}"
    return None


def _selected_cases(description: DatasetDescription, case_ids: list[str] | None) -> list[Case]:
    if case_ids is None:
        return description.cases
    wanted = set(case_ids)
    unknown = wanted - {case.case_id for case in description.cases}
    if unknown:
        raise InputError(description.root, f"unknown case id(s): {', '.join(sorted(unknown))}")
    return [case for case in description.cases if case.case_id in wanted]


def _check_plan_fits(description: DatasetDescription, plan: Plan) -> None:
    settings = plan.preprocessing
    if settings.num_channels != description.num_channels or not set(description.label_values) <= set(settings.labels):
        raise InputError(
            description.root,
            f"does not match the plan (plan for {plan.dataset!r}: {settings.num_channels} channel(s), labels {settings.labels}; "
            f"dataset: {description.num_channels} channel(s), labels {description.label_values}); re-run `medseg plan`",
        )
    if plan.dataset != description.name:
        log.warning("plan was made for dataset %r, preprocessing %r", plan.dataset, description.name)


def preprocess_dataset(
    description: DatasetDescription,
    plan: Plan,
    cache_dir: str | Path,
    *,
    configuration: str | None = None,
    workers: int = 2,
    case_ids: list[str] | None = None,
    progress: bool = True,
) -> PreprocessReport:
    """Preprocess the training cases (or ``case_ids``) onto ``configuration``'s grid (default: the plan's
    default) into ``cache_dir``; finished cases are skipped."""
    _check_plan_fits(description, plan)
    chosen: Configuration = plan.configuration(configuration or plan.default_configuration_name())
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    plan_hash = plan.preprocessing_identity(chosen)
    report = PreprocessReport(cache_dir, plan_hash)
    report.invalidated = _check_cache_info(cache_dir, plan_hash, description.name)
    if report.invalidated:
        log.warning("%s: recomputing all cases because %s", cache_dir, report.invalidated)
        for marker in cache_dir.glob("*.done"):
            marker.unlink()
    write_plan(plan, cache_dir / PLAN_FILE)
    write_record(CacheInfo(cache_version=CACHE_VERSION, preprocessing_hash=plan_hash, dataset=description.name,
                           configuration=chosen.name, target_spacing=chosen.grid_spacing()), cache_dir / INFO_FILE)
    plan_data = plan.model_dump(mode="json")
    todo = []
    for case in _selected_cases(description, case_ids):
        reason = case_status(cache_dir, case, plan_hash)
        if reason is None:
            report.skipped.append(case.case_id)
        else:
            log.debug("%s: %s", case.case_id, reason)
            todo.append((case.case_id, (case.to_dict(), description.num_channels, plan_data, chosen.name, str(cache_dir), plan_hash)))
    if report.skipped:
        log.debug("%d case(s) already preprocessed with this plan: skipped", len(report.skipped))
    for outcome in map_cases(preprocess_case_to_cache, todo, workers=workers, description="preprocess", progress=progress):
        if outcome.ok:
            report.processed.append(outcome.key)
        else:
            files = ", ".join(str(p) for p in description.case(outcome.key).sources())
            report.failed[outcome.key] = f"{outcome.error} (case files: {files})" if str(description.root) not in outcome.error else outcome.error
            log.error("case %s failed: %s", outcome.key, outcome.error)
    return report


def read_cache(cache_dir: str | Path) -> tuple[Plan, CacheInfo]:
    """The plan and the info of a cache folder; a cache of another medseg layout gets a one-line 'rebuild' message."""
    cache_dir = Path(cache_dir)
    if not (cache_dir / PLAN_FILE).is_file():
        raise InputError(cache_dir, "no plan.json here: run `medseg preprocess` first (or pass the raw dataset to `medseg train`)")
    plan = read_plan(cache_dir / PLAN_FILE)
    info = read_record(CacheInfo, cache_dir / INFO_FILE)
    if info.cache_version != CACHE_VERSION:
        raise InputError(cache_dir, f"was built by another medseg (cache version {info.cache_version}, this medseg reads {CACHE_VERSION}); "
                                    "rebuild it with `medseg preprocess DATASET` (or train from the raw dataset)")
    return plan, info


def load_case(cache_dir: str | Path, case_id: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray | None, CaseProperties]:
    """``(image, seg, properties)`` of a cached case; arrays memory-mapped read-only by default."""
    paths = case_paths(cache_dir, case_id)
    if not paths["done"].is_file():
        raise InputError(paths["image"], "case is not (completely) preprocessed; run `medseg preprocess`")
    mode = "r" if mmap else None
    image = np.load(paths["image"], mmap_mode=mode)
    seg = np.load(paths["seg"], mmap_mode=mode) if paths["seg"].is_file() else None
    return image, seg, read_properties(paths["properties"])


def cached_case_ids(cache_dir: str | Path) -> list[str]:
    """Ids of the completely cached cases (those with a done marker)."""
    return sorted(path.name[: -len(".done")] for path in Path(cache_dir).glob("*.done"))


def load_case_arrays(cache_dir: str | Path, case_id: str, mmap: bool = True):
    """A cached case as :class:`medseg.data.sampling.CaseArrays` (class locations as int arrays)."""
    from medseg.data.sampling import CaseArrays

    image, seg, properties = load_case(cache_dir, case_id, mmap)
    return CaseArrays(case_id, image, seg, properties.class_location_arrays())

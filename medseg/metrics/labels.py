"""Which labels to evaluate and what they are called: from dataset.json, label_map.json or the data.

Accepted sources:

* MSD ``dataset.json``: ``"labels": {"0": "background", "1": "liver", ...}`` (index -> name);
* nnU-Net v2 ``dataset.json``: ``"labels": {"background": 0, "liver": 1, "tumor": 2}`` (name ->
  index); a list of indices (a region, e.g. ``"whole_tumor": [1, 2, 3]``) is evaluated as the union;
* TotalSegmentator-style ``label_map.json``: ``{"1": "spleen", ...}``, or several such maps keyed
  by task (``{"total": {...}, "total_mr": {...}}``; pick one with ``task``);
* a folder holding one of those files (e.g. a model folder), a Python dict in either direction,
  or a list of indices;
* nothing: every non-zero value found in the data, named ``label_<k>``.

Label 0 / "background" is never evaluated.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from medseg.errors import ConfigError, InputError

LabelSource = Union[str, Path, Mapping, Iterable[int], None]
LABEL_FILES = ("dataset.json", "label_map.json")


@dataclass(frozen=True)
class LabelSpec:
    """One evaluated structure: a name and the voxel values that make it up (one, or several for a region)."""

    name: str
    values: tuple[int, ...]

    @property
    def index(self) -> str:
        """The value(s) as text for tables: ``"5"`` or ``"1+2+3"`` for a region."""
        return "+".join(str(value) for value in self.values)


def _is_int_like(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().isdigit()


def _from_mapping(mapping: Mapping, where: str) -> list[LabelSpec]:
    entries = {key: value for key, value in mapping.items() if not str(key).startswith("_")}
    if not entries:
        raise InputError(where, "label map is empty")
    specs: list[LabelSpec] = []
    if all(_is_int_like(key) for key in entries):  # index -> name (MSD, TotalSegmentator)
        for key, name in entries.items():
            if not isinstance(name, str):
                raise InputError(where, f"label {key}: expected a name, got {name!r}")
            if int(key) != 0:
                specs.append(LabelSpec(name, (int(key),)))
    else:  # name -> index or region (nnU-Net v2)
        for name, value in entries.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            if not values or not all(_is_int_like(item) for item in values):
                raise InputError(where, f"label '{name}': expected an index or a list of indices, got {value!r}")
            values = tuple(sorted({int(item) for item in values} - {0}))
            if values and str(name).lower() not in ("background", "ignore"):  # nnU-Net's 'ignore' is no structure
                specs.append(LabelSpec(str(name), values))
    if not specs:
        raise InputError(where, "label map has no foreground label (only background)")
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(where, f"label names are not unique: {', '.join(duplicates)}")
    return sorted(specs, key=lambda spec: spec.values)


def _from_json_file(path: Path, task: str | None) -> list[LabelSpec]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(path, f"not a readable JSON label file ({error})") from error
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object")
    if isinstance(data.get("labels"), dict):  # dataset.json (MSD or nnU-Net)
        return _from_mapping(data["labels"], str(path))
    tasks = {key: value for key, value in data.items() if isinstance(value, dict) and not key.startswith("_")}
    if tasks and len(tasks) == len([key for key in data if not key.startswith("_")]):
        if task is None:
            if len(tasks) > 1:
                raise InputError(path, f"holds label maps of several tasks ({', '.join(tasks)}); choose one with --label-task")
            task = next(iter(tasks))
        if task not in tasks:
            raise InputError(path, f"has no task '{task}'; tasks: {', '.join(tasks)}")
        return _from_mapping(tasks[task], f"{path}[{task}]")
    if task is not None:
        raise InputError(path, f"is a single label map; --label-task '{task}' does not apply")
    return _from_mapping(data, str(path))


def load_label_specs(source: LabelSource, task: str | None = None) -> list[LabelSpec] | None:
    """Label specs from a file, folder, mapping or list; ``None`` means: infer from the data."""
    if source is None:
        return None
    if isinstance(source, Mapping):
        return _from_mapping(source, "labels")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            found = [path / name for name in LABEL_FILES if (path / name).is_file()]
            if not found:
                raise InputError(path, f"folder holds none of {', '.join(LABEL_FILES)}")
            path = found[0]
        if not path.is_file():
            raise InputError(path, "label file does not exist")
        return _from_json_file(path, task)
    values = sorted({int(value) for value in source} - {0})
    if not values:
        raise ConfigError("labels: the list of label indices is empty")
    return [LabelSpec(f"label_{value}", (value,)) for value in values]


def load_ignore_label(source: LabelSource) -> int | None:
    """The nnU-Net v2 'ignore' label value of a dataset.json (or a folder holding one), if it declares one."""
    if isinstance(source, Mapping):
        labels = source
    elif isinstance(source, (str, Path)) and Path(source).exists():
        path = Path(source) / "dataset.json" if Path(source).is_dir() else Path(source)
        try:
            data = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None  # load_label_specs has already reported an unreadable file
        labels = data.get("labels") if isinstance(data, dict) else None
    else:
        return None
    value = labels.get("ignore") if isinstance(labels, Mapping) else None
    return int(value) if _is_int_like(value) else None


def inferred_specs(values: Iterable[int]) -> list[LabelSpec]:
    """One spec per non-zero value, named ``label_<k>``."""
    return [LabelSpec(f"label_{int(value)}", (int(value),)) for value in sorted(set(int(v) for v in values) - {0})]


def find_spec(specs: list[LabelSpec], key: int | str) -> LabelSpec | None:
    """The spec named ``key``, or the single-value spec whose value is ``key``."""
    text = str(key).strip()
    for spec in specs:
        if spec.name == text:
            return spec
    if _is_int_like(text):
        for spec in specs:
            if spec.values == (int(text),):
                return spec
    return None


def resolve_keys(specs: list[LabelSpec], keys: Iterable[int | str], what: str) -> list[LabelSpec]:
    """Map user-given names/indices to specs; unknown keys are a config error listing valid names."""
    resolved = []
    for key in keys:
        spec = find_spec(specs, key)
        if spec is None:
            valid = ", ".join(f"{s.name} ({s.index})" for s in specs[:30]) + (" ..." if len(specs) > 30 else "")
            raise ConfigError(f"{what}: unknown label '{key}'; known labels: {valid}")
        resolved.append(spec)
    return resolved

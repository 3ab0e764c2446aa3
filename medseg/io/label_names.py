"""What the values of a mask file mean: label names (and the model that made it) from JSON files.

A mask written by `medseg infer` has a sidecar ``<case>.json`` beside it whose ``labels`` section
names every foreground label and whose ``model`` section identifies the weights. Masks from
elsewhere come with a label file in one of the common shapes, all accepted here:

* ``{"1": "liver", "2": "tumor"}``: index -> name (MSD, TotalSegmentator class maps);
* ``{"liver": 1}`` or ``{"liver": [1]}``: name -> index (nnU-Net v2);
* ``{"liver": {"index": 1, ...}}``: a medseg inference sidecar's ``labels`` section;
* any of these under a top-level ``"labels"`` key (dataset.json, a medseg sidecar);
* a region dataset.json (nnU-Net v2's region convention, what `medseg dataset import` writes for
  BraTS): ``{"whole tumor": [1, 2, 4], "tumor core": [1, 4], "enhancing tumor": [4]}``.

A region is a union of label values, but a mask holds values (a region model paints them by
``regions_class_order``), so a region file names each *value*, with the rule training uses for the
model's labels (:func:`dataset_labels`, which `medseg.data.dataset` uses), so that a SEG made from a mask and the
`medseg infer` sidecar of that mask agree: a single-value entry's name (``"enhancing tumor": [4]``
names 4), else the dataset's original name of the value where the import recorded it
(``medseg_import.class_names``: 2 is "oedema"), else ``label_<value>``. A multi-value region's name
never names one value: "whole tumor" on the oedema-only voxels of value 2 would mislabel them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.io.atomic import full_suffix

log = logging.getLogger(__name__)


def _index(value: Any) -> int | None:
    if isinstance(value, dict):
        value = value.get("index")
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    return None


def _is_region_map(labels: dict) -> bool:
    """nnU-Net v2's rule: a labels mapping is region-based when any name maps to a list of several values."""
    return any(isinstance(value, list) and len(value) > 1 for value in labels.values())


def parse_label_names(data: Any, source: str | Path) -> dict[int, str]:
    """Label index -> name from any of the shapes in the module docstring."""
    document = data if isinstance(data, dict) and isinstance(data.get("labels"), dict) else {"labels": data}
    data = document["labels"]
    if not isinstance(data, dict) or not data:
        raise InputError(source, "expected a JSON mapping of label index -> name (or name -> index, or a 'labels' section)")
    if _is_region_map(data):
        return dataset_labels(document, Path(source))[0]
    if all(str(key).strip().isdigit() for key in data) and all(isinstance(value, str) for value in data.values()):
        return {int(key): str(value) for key, value in data.items()}
    names: dict[int, str] = {}
    for name, value in data.items():
        index = _index(value)
        if index is None:
            raise InputError(source, f"label '{name}' has no single integer index ({value!r})")
        names[index] = str(name)
    return names


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(path, f"not a readable JSON file ({str(error).splitlines()[0][:160]})") from error


def sidecar_of(mask_path: str | Path) -> Path:
    """Where `medseg infer` puts the sidecar of a mask: ``case.nii.gz`` -> ``case.json``."""
    mask_path = Path(mask_path)
    return mask_path.with_name(mask_path.name[: -len(full_suffix(mask_path))] + ".json")


def labels_for_mask(mask_path: str | Path, labels_file: str | Path | None = None) -> tuple[dict[int, str] | None, dict | None]:
    """(label names, model id) for a mask: from ``labels_file`` if given, else from the mask's sidecar.

    Either may be None when nothing describes the mask; the model id only comes from a sidecar.
    """
    sidecar = sidecar_of(mask_path)
    data = _read_json(sidecar) if sidecar.is_file() else None
    model = data.get("model") if isinstance(data, dict) and isinstance(data.get("model"), dict) else None
    if labels_file is not None:
        path = Path(labels_file)
        if not path.is_file():
            raise InputError(path, "label file does not exist")
        return parse_label_names(_read_json(path), path), model
    if isinstance(data, dict) and isinstance(data.get("labels"), dict):
        return parse_label_names(data, sidecar), model
    return None, model


def dataset_labels(data: dict[str, Any], path: Path) -> tuple[dict[int, str], dict[str, tuple[int, ...]]]:
    """A dataset.json's labels: plain labels (value -> name) and, for a region dataset, every foreground region in declared order.

    nnU-Net v2's rule: a dataset is region-based when any label maps to a list of more than one
    value; then *every* foreground entry is a region (an integer ``4`` or ``[4]`` is the region
    {4}), each one sigmoid output, in the order of dataset.json.
    """
    raw = data.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise InputError(path, "'labels' must be a non-empty mapping name -> index")
    entries: list[tuple[str, tuple[int, ...], bool]] = []
    for name, value in raw.items():
        if isinstance(value, (list, tuple)):
            if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise InputError(path, f"region label '{name}' must be a list of integers, got {value!r}")
            entries.append((str(name), tuple(int(v) for v in value), True))
        elif isinstance(value, int) and not isinstance(value, bool):
            entries.append((str(name), (int(value),), False))
        elif isinstance(value, str) and value.lstrip("-").isdigit():
            entries.append((str(name), (int(value),), False))
        else:
            raise InputError(path, f"label '{name}' must map to an integer or a list of integers, got {value!r}")
    region_based = any(len(values) > 1 for _, values, _ in entries)
    labels: dict[int, str] = {}
    regions: dict[str, tuple[int, ...]] = {}
    for name, values, _ in entries:
        if len(values) == 1:
            labels.setdefault(values[0], name)
        if region_based and name != "ignore" and set(values) != {0}:
            regions[name] = values
    class_names = (data.get("medseg_import") or {}).get("class_names") if isinstance(data.get("medseg_import"), dict) else None
    for member in sorted({member for values in regions.values() for member in values}):
        name = class_names.get(str(member)) if isinstance(class_names, dict) else None
        if name and name not in labels.values() and member not in labels:
            labels[member] = str(name)
        labels.setdefault(member, f"label_{member}")
    return labels, regions

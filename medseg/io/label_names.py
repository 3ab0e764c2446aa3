"""What the values of a mask file mean: label names (and the model that made it) from JSON files.

A mask written by `medseg infer` has a sidecar ``<case>.json`` beside it whose ``labels`` section
names every foreground label and whose ``model`` section identifies the weights. Masks from
elsewhere come with a label file in one of the common shapes, all accepted here:

* ``{"1": "liver", "2": "tumor"}``: index -> name (MSD, TotalSegmentator class maps);
* ``{"liver": 1}`` or ``{"liver": [1]}``: name -> index (nnU-Net v2);
* ``{"liver": {"index": 1, ...}}``: a medseg inference sidecar's ``labels`` section;
* any of these under a top-level ``"labels"`` key (dataset.json, a medseg sidecar).
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


def parse_label_names(data: Any, source: str | Path) -> dict[int, str]:
    """Label index -> name from any of the shapes in the module docstring."""
    if isinstance(data, dict) and isinstance(data.get("labels"), dict):
        data = data["labels"]
    if not isinstance(data, dict) or not data:
        raise InputError(source, "expected a JSON mapping of label index -> name (or name -> index, or a 'labels' section)")
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

"""Atomic CSV/JSON writers for metric tables: a crashed run never leaves half a summary behind.

JSON has no NaN: undefined values become ``null``. CSV keeps full float precision (``repr``),
writes NaN as ``nan`` and missing values (e.g. lesion columns of organ labels) as empty cells.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from medseg.io.atomic import atomic_path


def plain(value: Any) -> Any:
    """Convert numpy scalars/arrays and NaN/inf to JSON-safe Python values, recursively."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(data: Any, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(plain(data), indent=1, allow_nan=False) + "\n")
    return path


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else repr(float(value))
    return str(value)


def write_csv(rows: list[dict], columns: list[str], path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as temporary:
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_cell(row.get(column)) for column in columns])
    return path


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV written by :func:`write_csv`, as strings (for the report and tests)."""
    return read_csv_with_header(path)[0]


def read_csv_with_header(path: str | Path) -> tuple[list[dict[str, str]], list[str]]:
    """Rows (as strings) and the header of a CSV; a file without a header row gives ``([], [])``."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader), list(reader.fieldnames or [])

"""Typed records at the JSON boundary: validated on every load, with errors that name the file and field.

Code between pipeline stages passes these objects, never the dicts they were read from; JSON
appears only where a record is read from or written to disk (:func:`read_record`,
:func:`write_record`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from medseg.errors import InputError
from medseg.io.atomic import write_json

RecordT = TypeVar("RecordT", bound="Record")


class Record(BaseModel):
    """Base of the pipeline's typed records: unknown keys are refused, so a typo in a hand-edited plan is caught."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)


def describe_validation_error(error: ValidationError) -> str:
    """``field.sub: message`` of the first problem, one line (pydantic's own text spans several)."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "missing field"
    return f"{where}: {message}"


def validate_record(model: type[RecordT], data: Any, source: str | Path, what: str | None = None) -> RecordT:
    """``model`` from ``data``; a problem becomes an InputError naming ``source`` and the field.

    ``data`` comes from a file, so a validator that trips over a value of the wrong type (a list
    where a mapping belongs) is a problem of the file as much as a ValidationError is.
    """
    what = what or model.__name__.lower()
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InputError(source, f"not a valid {what} ({describe_validation_error(error)})") from error
    except (TypeError, AttributeError, KeyError) as error:
        raise InputError(source, f"not a valid {what} (a value has the wrong type: {type(error).__name__}: {str(error)[:120]})") from error


def read_json(path: str | Path) -> Any:
    """Parsed JSON of ``path``; missing, unreadable or malformed files become one-line InputErrors."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "does not exist" if not path.exists() else "is not a file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(path, f"not valid JSON ({str(error).splitlines()[0]})") from error
    except OSError as error:
        raise InputError(path, f"cannot be read ({error.strerror or error})") from error


def read_record(model: type[RecordT], path: str | Path) -> RecordT:
    return validate_record(model, read_json(path), path)


def write_record(record: Record, path: str | Path, indent: int | None = 2) -> Path:
    """Atomically write ``record`` as JSON (None-valued optional fields included, so files are self-describing)."""
    return write_json(path, record.model_dump(mode="json"), indent=indent)

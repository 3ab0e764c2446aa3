"""Typed configuration: YAML file + ``--set a.b=c`` overrides -> one validated object.

Every hyperparameter lives in a pydantic model; sections are owned by the module that uses them
and composed here. Override values are parsed with ``yaml.safe_load`` (never ``eval``), so
``--set train.lr=0.01`` gives a float and ``--set model.norm=batch`` a string; pydantic then
checks the type and rejects unknown keys, listing the valid ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from medseg.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def parse_overrides(overrides: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` with YAML-typed values."""
    tree: dict[str, Any] = {}
    for item in overrides or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' must look like section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as error:
            raise ConfigError(f"override '{item}': value is not valid YAML ({error.problem})") from error
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with another override of '{part}'")
        node[parts[-1]] = value
    return tree


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def build(model: type[ModelT], data: dict[str, Any], source: str = "config") -> ModelT:
    """Validate ``data`` into ``model``; the error names the offending key and the valid ones."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = f"unknown key; valid keys here: {', '.join(_valid_keys(model, first['loc'][:-1]))}"
        raise ConfigError(f"{source}: {where}: {message}") from error


def _valid_keys(model: type[BaseModel], location: tuple) -> list[str]:
    current: Any = model
    for part in location:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
    return sorted(getattr(current, "model_fields", {}))


def load(model: type[ModelT], path: str | Path | None = None, overrides: list[str] | None = None) -> ModelT:
    """Defaults <- YAML file <- ``--set`` overrides, validated into ``model``."""
    data = read_yaml(path) if path else {}
    data = deep_merge(data, parse_overrides(overrides))
    return build(model, data, source=str(path) if path else "--set")


def save_resolved(config: BaseModel, path: str | Path) -> Path:
    """Write the fully resolved config (every default spelled out) for later commands to read."""
    from medseg.io.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return path

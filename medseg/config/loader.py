"""The config loader: defaults <- YAML file <- ``--set section.key=value`` -> one validated RunConfig.

One grammar for every command: ``--set`` takes a dotted path from the root of
:class:`~medseg.config.schema.RunConfig` (``train.lr=0.01``, ``infer.overlap=0.25``,
``evaluate.tolerance_mm=2``, ``dataset=path``). Values are parsed with ``yaml.safe_load`` (never
``eval``), so ``train.lr=0.01`` gives a float and ``model.norm=batch`` a string; pydantic then checks
the type and rejects unknown keys, listing the valid ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from medseg.errors import ConfigError

if TYPE_CHECKING:
    from medseg.config.schema import RunConfig

ModelT = TypeVar("ModelT", bound=BaseModel)
#: Names of the file a run folder keeps its resolved config in.
RUN_CONFIG_FILE = "config.yaml"
#: A config is a page of settings; anything larger is not one (and is not read into memory).
MAX_CONFIG_BYTES = 16 * 10**6


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
    """A YAML mapping of sections; a run folder stands for its ``config.yaml``."""
    path = Path(path)
    if path.is_dir() and (path / RUN_CONFIG_FILE).is_file():
        path = path / RUN_CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: config file does not exist" if not path.exists() else f"{path}: is a folder, not a YAML config file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size / 1e6:.0f} MB is too large for a YAML config (limit {MAX_CONFIG_BYTES // 10**6} MB)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (expected a YAML config)") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror or error})") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(error)})") from error
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def _yaml_problem(error: yaml.YAMLError) -> str:
    """``line 3, column 7: expected ',' or ']'`` instead of PyYAML's several-line report."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


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
            message += _section_hint(model, first["loc"])
        raise ConfigError(f"{source}: {where}: {message}") from error


def _section_hint(model: type[BaseModel], location: tuple) -> str:
    """For a bare key at the root that belongs to a section: ``(did you mean evaluate.tolerance_mm?)``."""
    if len(location) != 1:
        return ""
    owners = [name for name, field in model.model_fields.items() if location[0] in getattr(field.annotation, "model_fields", {})]
    return f" (did you mean {' or '.join(f'{owner}.{location[0]}' for owner in owners)}?)" if owners else ""


def _valid_keys(model: type[BaseModel], location: tuple) -> list[str]:
    current: Any = model
    for part in location:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
    return sorted(getattr(current, "model_fields", {}))


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] | None = None,
    *,
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """The one loader: defaults <- ``base`` (e.g. a run's saved config) <- YAML file <- ``--set`` overrides.

    ``path`` may be any medseg config file or a run folder (its ``config.yaml``).
    """
    from medseg.config.schema import RunConfig

    data = deep_merge(base or {}, read_yaml(path) if path else {})
    data = deep_merge(data, parse_overrides(overrides))
    return build(RunConfig, data, source=str(path) if path else "--set")


def save_resolved(config: BaseModel, path: str | Path) -> Path:
    """Write the fully resolved config (every default spelled out) for later commands to read."""
    from medseg.io.atomic import write_text

    return write_text(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))

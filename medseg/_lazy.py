"""Lazy attribute loading for package ``__init__`` modules, so light imports (configs) pull no torch."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, modules: dict[str, list[str]]) -> tuple[Callable[[str], Any], list[str]]:
    """A module ``__getattr__`` that imports each name from its module on first use, and the sorted ``__all__``.

    ``modules`` maps a module path to the names it exports: ``{"medseg.infer.config": ["InferConfig"]}``.
    """
    exports = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__, sorted(exports)

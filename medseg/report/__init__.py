"""Clinical evaluation reports: one self-contained HTML file (optionally PDF) from a `medseg evaluate` folder.
Attributes load lazily so that every config load (it reads :mod:`medseg.report.config`) imports no matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"ReportConfig": "medseg.report.config", "build_report": "medseg.report.builder"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medseg.report' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

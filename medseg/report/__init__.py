"""Clinical evaluation reports: one self-contained HTML file (optionally PDF) from a `medseg evaluate` folder.
Attributes load lazily so that every config load (it reads :mod:`medseg.report.config`) imports no matplotlib.
"""

from __future__ import annotations

from medseg._lazy import lazy_exports

_EXPORTS = {"ReportConfig": "medseg.report.config", "build_report": "medseg.report.builder"}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("medseg.report", _EXPORTS)

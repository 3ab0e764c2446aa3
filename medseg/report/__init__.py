"""Clinical evaluation reports: one self-contained HTML file (optionally PDF) from a `medseg evaluate` folder.
Attributes load lazily so that every config load (it reads :mod:`medseg.report.config`) imports no matplotlib.
"""

from __future__ import annotations

from medseg._lazy import lazy_exports

__getattr__, __all__ = lazy_exports("medseg.report", {
    "medseg.report.config": ["ReportConfig"],
    "medseg.report.builder": ["build_report"],
})

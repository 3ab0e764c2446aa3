"""Clinical evaluation reports: one self-contained HTML file (optionally PDF) from a `medseg evaluate` folder."""

from medseg.report.builder import build_report
from medseg.report.config import ReportConfig

__all__ = ["ReportConfig", "build_report"]

"""Segmentation metrics that agree with MONAI, lesion-wise detection, and statistics without ground truth.

Pure numpy/scipy (no torch), so evaluation is fast on one CPU core.
"""

from medseg.metrics.case import evaluate_case
from medseg.metrics.config import EvaluateConfig
from medseg.metrics.evaluate import EvaluationResult, evaluate
from medseg.metrics.labels import LabelSpec, load_label_specs
from medseg.metrics.statistics import segmentation_statistics
from medseg.metrics.uncertainty import ErrorRanking, error_auroc, evaluate_uncertainty

__all__ = [
    "ErrorRanking",
    "EvaluateConfig",
    "EvaluationResult",
    "LabelSpec",
    "evaluate",
    "evaluate_case",
    "evaluate_uncertainty",
    "error_auroc",
    "load_label_specs",
    "segmentation_statistics",
]

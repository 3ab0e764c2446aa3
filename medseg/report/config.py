"""Every knob of ``medseg report`` in one validated section (``--set key=value`` on the command line)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from medseg.config import Section

PLOTTABLE = ("dice", "iou", "nsd", "hd", "hd95", "assd", "abs_volume_error_ml", "rel_volume_error", "volume_pred_ml", "volume_ref_ml")


class ReportConfig(Section):
    """Report settings; defaults give a readable report of a few MB at most for any dataset size."""

    # --- which cases get overlay thumbnails -----------------------------------------------
    max_cases: int = Field(12, ge=0, description="Cases with overlay thumbnails, worst (lowest mean Dice) first; 0 = none.")

    # --- thumbnails ---------------------------------------------------------------------
    panel_height_px: int = Field(300, ge=64, le=1200, description="Height (px) of the slice panels of a case (the tallest panel, or the stack of coronal over sagittal).")
    max_width_px: int = Field(1150, ge=200, le=4000, description="Width cap (px) of a case's three panels; physical aspect is kept.")
    crop_to_foreground: bool = Field(True, description="Zoom each panel to the reference and predicted structures (plus crop_margin_mm).")
    crop_margin_mm: float = Field(20.0, ge=0, description="Context (mm) kept around the structures when cropping.")
    modality: Literal["auto", "CT", "MR", "other"] = Field(
        "auto", description="Intensity windowing: CT = fixed HU window, MR/other = percentiles; auto = DICOM Modality, else HU-like values (air below hu_air_threshold) mean CT."
    )
    ct_window_width: float = Field(400.0, gt=0, description="CT window width in HU (abdomen window W400).")
    ct_window_level: float = Field(40.0, description="CT window level in HU (abdomen window L40).")
    hu_air_threshold: float = Field(-500.0, description="An image whose 0.5th percentile is below this looks like CT in HU (air is -1000).")
    mr_percentiles: tuple[float, float] = Field((1.0, 99.0), description="Display range of non-CT images: these intensity percentiles.")
    reference_color: str = Field("#19d3f3", description="Contour colour of the reference (ground truth).")
    prediction_color: str = Field("#ff9f1c", description="Contour colour of the prediction.")
    error_color: str = Field("#ff2d55", description="Fill colour of the largest disagreement component.")
    region_colors: list[str] = Field(
        default_factory=lambda: ["#34c759", "#ff3b30", "#ffd60a", "#0a84ff", "#bf5af2", "#64d2ff"],
        min_length=1,
        description="Region-based (BraTS-style) overlays: one colour per region, in the evaluation's label order (whole tumour, core, enhancing).",
    )
    region_fill_alpha: float = Field(0.45, gt=0, le=1, description="Opacity of the predicted-region fill in region-based overlays.")
    contour_width: float = Field(1.1, gt=0, description="Contour line width (points).")
    palette_colors: int = Field(256, ge=0, le=256, description="Quantise thumbnails to this many colours (PNG palette, ~3x smaller; 0 = full RGB).")

    # --- plots --------------------------------------------------------------------------
    plot_metrics: list[str] = Field(
        default_factory=lambda: ["dice", "nsd", "hd95", "assd", "iou", "rel_volume_error"],
        description=f"Metrics with a box/strip plot, one panel each; any of {', '.join(PLOTTABLE)}.",
    )
    plot_dpi: int = Field(90, ge=40, le=300, description="Resolution of the plots.")
    worst_labels_listed: int = Field(15, ge=1, description="Labels (worst first) in the worst-cases-per-label table.")
    missed_lesions_listed: int = Field(20, ge=0, description="Largest missed reference lesions listed in the lesion section.")
    brats_lesions_listed: int = Field(40, ge=0, description="Reference lesions (worst first) listed in the BraTS lesion table.")

    # --- PDF ----------------------------------------------------------------------------
    chromium_timeout_s: float = Field(180.0, gt=0, description="Time limit for headless Chromium to print the PDF.")

    @field_validator("plot_metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str]) -> list[str]:
        unknown = [metric for metric in metrics if metric not in PLOTTABLE]
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(PLOTTABLE)}")
        return metrics

    @field_validator("mr_percentiles")
    @classmethod
    def _ordered(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= bounds[0] < bounds[1] <= 100:
            raise ValueError("mr_percentiles must satisfy 0 <= low < high <= 100")
        return bounds

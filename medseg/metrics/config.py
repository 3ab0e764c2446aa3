"""Every knob of ``medseg evaluate`` in one validated section, so a run is reproducible from summary.json."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from medseg.config import Section, yaml_switch


class EvaluateConfig(Section):
    """Evaluation settings; the resolved values are written into summary.json."""

    # --- boundary metrics -----------------------------------------------------------------
    tolerance_mm: float = Field(1.0, ge=0, description="NSD tolerance tau (mm) for labels without their own value.")
    label_tolerance_mm: dict[str, float] = Field(
        default_factory=dict, description="Per-label NSD tolerance (mm), keyed by label name or index, e.g. {liver: 2.0, '3': 1.5}."
    )
    empty_distance: Literal["diagonal", "fixed", "nan"] = Field(
        "diagonal",
        description=(
            "HD/HD95/ASSD when exactly one of prediction and reference is empty: 'diagonal' = the image "
            "diagonal in mm (the largest distance possible in the grid), 'fixed' = empty_distance_mm, "
            "'nan' = leave undefined (excluded from aggregates)."
        ),
    )
    empty_distance_mm: Optional[float] = Field(None, gt=0, description="The cap (mm) used when empty_distance='fixed'.")

    # --- lesion-wise evaluation -----------------------------------------------------------
    lesion_labels: list[Union[int, str]] = Field(default_factory=list, description="Labels (name or index) evaluated lesion by lesion.")
    connectivity: Literal[6, 18, 26] = Field(26, description="Voxel connectivity of lesion components (26 = faces, edges and corners).")
    lesion_min_voxels: int = Field(1, ge=1, description="Components smaller than this (in either map) are ignored as noise.")
    lesion_min_overlap_voxels: int = Field(1, ge=1, description="A reference lesion is hit by a predicted component sharing at least this many voxels.")
    lesion_iou_threshold: float = Field(
        0.0, ge=0, le=1, description="Additionally require IoU(reference lesion, union of hitting components) >= this to count as detected."
    )
    lesion_match_dilation_voxels: int = Field(
        0, ge=0, description="Dilate each reference lesion by this many voxels before looking for hits (BraTS 2023 uses 3)."
    )
    lesion_size_bins_ml: list[float] = Field(
        default_factory=lambda: [0.1, 0.5, 1.0, 5.0, 10.0],
        description="Edges (mL) of the size bins for sensitivity by lesion size; 0.5 mL is about a 10 mm sphere (RECIST's measurable-lesion limit).",
    )
    lesionwise_dice: bool = Field(True, description="Also report BraTS-2023-style lesion-wise Dice (missed and false-positive lesions count 0).")
    detection: Literal["auto", "on", "off"] = Field(
        "auto",
        description="FROC and average precision of lesion_labels from the confidences of `medseg infer --instances` (<case>_lesions.json and "
        "<case>_instances.nii.gz beside each prediction): auto = when every prediction has them; on = they must be there.",
    )
    froc_fp_rates: list[float] = Field(
        default_factory=lambda: [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0],
        description="Mean false positives per case at which the FROC sensitivity is reported; their mean is the CPM (LUNA16's 1/8 ... 8).",
    )

    # --- BraTS 2023 lesion-wise scores ----------------------------------------------------
    brats_labels: list[Union[int, str]] = Field(
        default_factory=list, description="Labels or regions (name or index) scored with the BraTS 2023 lesion-wise Dice and HD95 (see medseg.metrics.brats); --brats = all."
    )
    brats_dilation: int = Field(3, ge=0, description="Dilations (18-connected) that join nearby reference lesions and match predictions: 3 for BraTS glioma, SSA, PED; 1 for MEN, MET.")
    brats_min_volume_mm3: float = Field(50.0, ge=0, description="Reference lesions of at most this volume are not scored (BraTS: 50 mm^3; 2 for MET).")
    brats_label_min_volume_mm3: dict[str, float] = Field(default_factory=dict, description="Per-label volume threshold (mm^3), keyed by label name or index.")
    brats_missing_hd95_mm: float = Field(374.0, gt=0, description="HD95 of a missed lesion and of a false positive (BraTS: 374 mm).")

    # --- aggregation ----------------------------------------------------------------------
    bootstrap_samples: int = Field(1000, ge=0, description="Bootstrap resamples for the confidence interval of each mean (0 = none).")
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of the bootstrap interval.")
    seed: int = Field(0, description="Seed of the bootstrap, so intervals are reproducible.")
    worst_cases: int = Field(5, ge=0, description="How many worst cases (lowest Dice) to list per label.")

    # --- inputs ---------------------------------------------------------------------------
    on_missing: Literal["error", "skip"] = Field(
        "error", description="A case present in only one of the two folders: 'error' stops, 'skip' evaluates the common cases and reports the rest."
    )

    @field_validator("froc_fp_rates")
    @classmethod
    def _positive_rates(cls, rates: list[float]) -> list[float]:
        if not rates or any(rate <= 0 for rate in rates):
            raise ValueError("FP rates must be a non-empty list of positive numbers")
        return sorted(rates)

    @field_validator("detection", mode="before")
    @classmethod
    def _switch(cls, value: object) -> object:
        return yaml_switch(value)

    @field_validator("lesion_size_bins_ml")
    @classmethod
    def _increasing(cls, edges: list[float]) -> list[float]:
        if any(edge <= 0 for edge in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError("size bin edges must be positive and strictly increasing")
        return edges

    @field_validator("label_tolerance_mm", mode="before")
    @classmethod
    def _non_negative(cls, values):
        if not isinstance(values, dict):
            return values  # let pydantic report the type error
        for key, value in values.items():
            if isinstance(value, (int, float)) and not value >= 0:
                raise ValueError(f"tolerance for '{key}' must be >= 0 mm, got {value}")
        return {str(key): value for key, value in values.items()}  # YAML may give index keys as ints

    @model_validator(mode="after")
    def _fixed_needs_value(self) -> EvaluateConfig:
        if self.empty_distance == "fixed" and self.empty_distance_mm is None:
            raise ValueError("empty_distance='fixed' needs empty_distance_mm")
        return self

    def size_bin_names(self) -> list[str]:
        """Human-readable names of the size bins, e.g. ``['<0.1 mL', '0.1-0.5 mL', ..., '>=10 mL']``."""
        edges = self.lesion_size_bins_ml
        names = [f"<{edges[0]:g} mL"]
        names += [f"{a:g}-{b:g} mL" for a, b in zip(edges, edges[1:])]
        names.append(f">={edges[-1]:g} mL")
        return names

    def size_bin(self, volume_ml: float) -> str:
        """Bin name of a lesion volume; bins are half-open [lower, upper)."""
        names = self.size_bin_names()
        for edge, name in zip(self.lesion_size_bins_ml, names):
            if volume_ml < edge:
                return name
        return names[-1]

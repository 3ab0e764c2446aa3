"""The BraTS section of a report: region scores with CIs, the lesion table and the false positives.

Everything comes from what ``medseg evaluate --brats`` wrote: summary.json (``brats_lesionwise``
and the per-region metric aggregates with their bootstrap CIs) and brats_lesions.csv (one row per
reference lesion, one per false-positive component). Only formatting happens here, so the report
and the evaluation always agree.
"""

from __future__ import annotations

import math
from typing import Any

from medseg.report.inputs import EvalData
from medseg.report.tables import MISSING, MetricColumn, metric_cell, number

LESION_DICE = MetricColumn("brats_lesion_dice", "lesion-wise Dice", 3, tint=True)
LESION_HD95 = MetricColumn("brats_lesion_hd95", "lesion-wise HD95 (mm)", 1)
LEGACY_DICE = MetricColumn("dice", "Dice", 3, tint=True)
LEGACY_HD95 = MetricColumn("hd95", "HD95 (mm)", 1)
NSD = MetricColumn("nsd", "NSD", 3)
REGION_COLUMNS = (LESION_DICE, LESION_HD95, LEGACY_DICE, LEGACY_HD95, NSD)


def region_rows(data: EvalData) -> list[dict[str, Any]]:
    """One row per BraTS-scored region: the five scores (mean, CI) and the pooled TP/FP/FN lesion counts."""
    metrics = data.summary.get("metrics") or {}
    rows = []
    for label, entry in (data.summary.get("brats_lesionwise") or {}).items():
        stats = metrics.get(label) or {}
        rows.append({
            "label": label,
            "cases": str(entry.get("cases", MISSING)),
            "cells": [metric_cell(stats.get(column.key), column) for column in REGION_COLUMNS],
            "tp": str(entry.get("tp", MISSING)), "fp": str(entry.get("fp", MISSING)), "fn": str(entry.get("fn", MISSING)),
            "min_volume": number(entry.get("min_volume_mm3"), 0), "dilation": str(entry.get("dilation", MISSING)),
            "penalty": number(entry.get("missing_hd95_mm"), 0),
        })  # fmt: skip
    return rows


def _sort_key(row: dict[str, Any]) -> tuple[float, float]:
    dice = float(row.get("dice", math.nan))
    return (-1.0 if math.isnan(dice) else dice, -float(row.get("volume_mm3") or 0.0))


def lesion_rows(data: EvalData, limit: int) -> list[dict[str, str]]:
    """Reference lesions worst first (missed ones, then lowest Dice; larger first on ties), at most ``limit``."""
    reference = sorted((row for row in data.brats_lesions if row.get("kind") == "reference"), key=_sort_key)
    rows = []
    for row in reference[:limit]:
        matched = [part for part in str(row.get("matched") or "").split(";") if part]
        rows.append({
            "case": row["case"], "label": row["label"], "lesion": number(row.get("lesion"), 0),
            "volume_ml": number(float(row.get("volume_mm3", math.nan)) / 1000.0, 3),
            "counted": "yes" if row.get("counted") else "no (below the size threshold)",
            "status": f"matched ({len(matched)} component{'s' if len(matched) != 1 else ''})" if matched else "missed",
            "dice": number(row.get("dice"), 3), "hd95": number(row.get("hd95"), 1),
        })  # fmt: skip
    return rows


def false_positive_rows(data: EvalData) -> list[dict[str, str]]:
    """Per case and region: how many false-positive components, their total and largest volume (largest total first)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in data.brats_lesions:
        if row.get("kind") == "false positive":
            groups.setdefault((row["case"], row["label"]), []).append(float(row.get("volume_mm3") or 0.0))
    ordered = sorted(groups.items(), key=lambda item: -sum(item[1]))
    return [
        {"case": case, "label": label, "count": str(len(volumes)), "total_ml": number(sum(volumes) / 1000.0, 3),
         "largest_ml": number(max(volumes) / 1000.0, 3)}
        for (case, label), volumes in ordered
    ]  # fmt: skip


def brats_context(data: EvalData, limit: int) -> dict[str, Any]:
    """The template's ``brats`` entry, or an empty mapping when the evaluation was not scored BraTS-style."""
    rows = region_rows(data)
    if not rows:
        return {}
    reference = [row for row in data.brats_lesions if row.get("kind") == "reference"]
    return {
        "regions": rows,
        "columns": REGION_COLUMNS,
        "lesions": lesion_rows(data, limit),
        "lesions_total": len(reference),
        "false_positives": false_positive_rows(data),
    }

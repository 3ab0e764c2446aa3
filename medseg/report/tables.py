"""Numbers -> table cells: consistent rounding, units and missing-value marks for every table.

The aggregates come from summary.json unchanged (mean, SD, median, IQR, bootstrap CI), so the
report and ``medseg evaluate`` always agree; only the formatting happens here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from medseg.report.inputs import EvalData

DASH = "\u2013"  # en dash for ranges
MISSING = "\u2014"  # em dash for undefined values


@dataclass(frozen=True)
class MetricColumn:
    key: str
    title: str
    digits: int
    scale: float = 1.0
    tint: bool = False  # colour the mean from red (0) to green (1)


TABLES = (
    ("per-label-overlap", "Overlap", (
        MetricColumn("dice", "Dice", 3, tint=True), MetricColumn("iou", "IoU", 3), MetricColumn("nsd", "NSD", 3, tint=True),
    )),
    ("per-label-distance", "Boundary distance and volume", (
        MetricColumn("hd95", "HD95 (mm)", 2), MetricColumn("assd", "ASSD (mm)", 2),
        MetricColumn("abs_volume_error_ml", "|volume error| (mL)", 2), MetricColumn("rel_volume_error", "relative volume error (%)", 1, scale=100.0),
    )),
)  # fmt: skip


def number(value: Any, digits: int = 3, scale: float = 1.0) -> str:
    if value is None or value == "":
        return MISSING
    value = float(value)
    if math.isnan(value):
        return MISSING
    return f"{value * scale:.{digits}f}"


def span(low: str, high: str) -> str:
    """A range: "0.70–0.90", but "-30.6 to -15.8" where a dash would read as a minus sign."""
    if MISSING in (low, high):
        return MISSING
    return f"{low} to {high}" if low.startswith("-") or high.startswith("-") else f"{low}{DASH}{high}"


def percent(value: Any, digits: int = 1) -> str:
    return MISSING if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * float(value):.{digits}f}%"


def tint(value: Any) -> str | None:
    """A light background from red (0) through yellow to green (1), for Dice-like scores."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    hue = 120 * min(max(float(value), 0.0), 1.0) ** 2  # most scores sit near 1: spread the top of the range
    return f"hsl({hue:.0f}, 70%, 88%)"


def metric_cell(stats: dict[str, Any] | None, column: MetricColumn) -> dict[str, Any]:
    stats = stats or {}
    d, s = column.digits, column.scale
    mean, sd = number(stats.get("mean"), d, s), number(stats.get("std"), d, s)
    median = number(stats.get("median"), d, s)
    q1, q3 = number(stats.get("q1"), d, s), number(stats.get("q3"), d, s)
    low, high = number(stats.get("ci_low"), d, s), number(stats.get("ci_high"), d, s)
    return {
        "mean_sd": mean if sd == MISSING else f"{mean} \u00b1 {sd}",
        "median_iqr": median if median == MISSING else f"{median} ({span(q1, q3)})",
        "ci": span(low, high),
        "n_nan": int(stats.get("n_nan") or 0),
        "tint": tint(stats.get("mean")) if column.tint else None,
    }


def per_label_tables(data: EvalData) -> list[dict[str, Any]]:
    """The two per-label tables (overlap; distance and volume) for the labels present somewhere."""
    metrics = data.summary["metrics"]
    total = len(data.case_ids)
    tolerances = {float(row["tolerance_mm"]) for row in data.cases if not math.isnan(float(row.get("tolerance_mm", math.nan)))}
    tables = []
    for table_id, title, columns in TABLES:
        rows = []
        for label in data.shown_labels():
            present = len(data.rows(label, present_only=True))
            label_rows = data.rows(label)
            tau = sorted({float(row["tolerance_mm"]) for row in label_rows if not math.isnan(float(row["tolerance_mm"]))})
            rows.append({
                "label": label,
                "index": label_rows[0]["label_index"] if label_rows else "",
                "cases": f"{present}/{total}",
                "one_sided": sum(row.get("empty") in ("pred", "ref") for row in label_rows) or "",
                "tolerance": ", ".join(f"{t:g}" for t in tau),
                "cells": [metric_cell(metrics.get(label, {}).get(column.key), column) for column in columns],
            })  # fmt: skip
        tables.append({"id": table_id, "title": title, "columns": columns, "rows": rows, "show_tolerance": table_id == "per-label-overlap" and len(tolerances) > 1})
    return tables


def lesion_rows(data: EvalData) -> list[dict[str, str]]:
    """One row per lesion label: pooled detection counts and rates, and lesion-wise Dice over cases."""
    rows = []
    for label, entry in (data.summary.get("lesions") or {}).items():
        dice = (data.summary["metrics"].get(label) or {}).get("lesion_dice") or {}
        rows.append({
            "label": label,
            "cases": str(entry.get("cases", MISSING)),
            "lesions_ref": str(entry.get("lesions_ref", MISSING)),
            "lesions_pred": str(entry.get("lesions_pred", MISSING)),
            "tp": str(entry.get("tp", MISSING)),
            "fn": str(entry.get("fn", MISSING)),
            "fp": str(entry.get("fp", MISSING)),
            "sensitivity": percent(entry.get("sensitivity")),
            "precision": percent(entry.get("precision")),
            "f1": number(entry.get("f1"), 3),
            "fp_per_case": number(entry.get("fp_per_case"), 2),
            "lesion_dice": metric_cell(dice, MetricColumn("lesion_dice", "", 3))["mean_sd"] if dice else MISSING,
            "lesion_dice_ci": metric_cell(dice, MetricColumn("lesion_dice", "", 3))["ci"] if dice else MISSING,
        })  # fmt: skip
    return rows


def lesion_list(data: EvalData, source: str, detected: bool, limit: int) -> list[dict[str, str]]:
    """The largest reference lesions that were missed (source='ref') or predicted false positives (source='pred')."""
    chosen = [row for row in data.lesions if row.get("source") == source and bool(row.get("detected")) == detected]
    chosen.sort(key=lambda row: -float(row.get("volume_ml", 0) or 0))
    return [
        {
            "case": row["case"], "label": row["label"], "lesion": number(row.get("lesion"), 0),
            "volume_ml": number(row.get("volume_ml"), 3), "size_bin": row.get("size_bin", ""),
            "long_axis_mm": number(row.get("long_axis_mm"), 1), "short_axis_mm": number(row.get("short_axis_mm"), 1),
        }
        for row in chosen[:limit]
    ]  # fmt: skip


def worst_per_label(data: EvalData, limit: int) -> list[dict[str, Any]]:
    """Labels with the lowest worst-case Dice, each with its worst cases from summary.json."""
    by_label = (data.summary.get("worst_cases") or {}).get("by_label") or {}
    shown = set(data.shown_labels())
    entries = []
    for label, cases in by_label.items():
        cases = [case for case in cases if case.get("empty") != "both"]
        if label in shown and cases:
            entries.append({"label": label, "cases": cases, "worst": min(float(case["dice"]) for case in cases)})
    entries.sort(key=lambda entry: entry["worst"])
    return entries[:limit]

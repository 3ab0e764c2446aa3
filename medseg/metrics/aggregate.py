"""Across-case summaries: mean, std, median, IQR and a seeded bootstrap CI per label and metric.

NaN values (undefined metrics, e.g. distances when both masks are empty) are left out of every
statistic and counted in ``n_nan``. ``std`` is the sample standard deviation (ddof=1). The CI is a
percentile bootstrap of the mean over cases; its generator is seeded from (seed, label, metric),
so adding a label or metric does not change the other intervals.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np

from medseg.metrics.config import EvaluateConfig

CASE_METRICS = (
    "dice", "iou", "hd", "hd95", "assd", "nsd", "volume_pred_ml", "volume_ref_ml",
    "abs_volume_error_ml", "rel_volume_error",
)  # fmt: skip
LESION_CASE_METRICS = ("lesion_sensitivity", "lesion_precision", "lesion_f1", "lesion_fp", "lesion_dice")
BRATS_CASE_METRICS = ("brats_lesion_dice", "brats_lesion_hd95")
# For these metrics a higher value is worse; used to order worst cases.
HIGHER_IS_WORSE = {"hd", "hd95", "assd", "abs_volume_error_ml", "lesion_fp", "brats_lesion_hd95"}


def _number(value) -> float:
    if value is None or value == "":
        return np.nan
    return float(value)


def describe(values: Iterable[float], bootstrap_samples: int = 1000, confidence: float = 0.95, seed_key: tuple = (0,)) -> dict[str, float | int | None]:
    """Summary statistics of one metric over cases; the CI is None when fewer than 2 values."""
    data = np.array([_number(v) for v in values], dtype=float)
    finite = data[~np.isnan(data)]
    n = int(finite.size)
    out: dict[str, float | int | None] = {"n": n, "n_nan": int(data.size - n)}
    if n == 0:
        return out | {key: None for key in ("mean", "std", "median", "q1", "q3", "iqr", "min", "max", "ci_low", "ci_high")}
    q1, median, q3 = np.percentile(finite, [25, 50, 75])
    out.update(
        mean=float(finite.mean()),
        std=float(finite.std(ddof=1)) if n > 1 else None,
        median=float(median),
        q1=float(q1),
        q3=float(q3),
        iqr=float(q3 - q1),
        min=float(finite.min()),
        max=float(finite.max()),
        ci_low=None,
        ci_high=None,
    )
    if n > 1 and bootstrap_samples > 0:
        rng = np.random.default_rng(list(seed_key))
        means = finite[rng.integers(0, n, size=(bootstrap_samples, n))].mean(axis=1)
        tail = (1 - confidence) / 2 * 100
        low, high = np.percentile(means, [tail, 100 - tail])
        out.update(ci_low=float(low), ci_high=float(high))
    return out


def _key(text: str) -> int:
    return zlib.crc32(text.encode())  # stable across runs, unlike hash()


def aggregate_cases(rows: list[dict], config: EvaluateConfig) -> dict[str, dict[str, dict]]:
    """{label: {metric: statistics}} over all case rows; lesion metrics only for lesion labels."""
    labels = list(dict.fromkeys(row["label"] for row in rows))
    result: dict[str, dict[str, dict]] = {}
    for label in labels:
        label_rows = [row for row in rows if row["label"] == label]
        metrics = list(CASE_METRICS)
        if any(row.get("lesions_ref", "") != "" for row in label_rows):
            metrics += LESION_CASE_METRICS
        if any(row.get("brats_lesion_dice", "") != "" for row in label_rows):
            metrics += BRATS_CASE_METRICS
        result[label] = {
            metric: describe(
                (row.get(metric) for row in label_rows),
                config.bootstrap_samples,
                config.confidence,
                (config.seed, _key(label), _key(metric)),
            )
            for metric in metrics
        }
    return result


def worst_cases(rows: list[dict], count: int, metric: str = "dice") -> dict[str, list[dict]]:
    """Per label, the ``count`` cases with the worst ``metric`` (NaN last), with Dice and HD95 for context."""
    result: dict[str, list[dict]] = {}
    for label in dict.fromkeys(row["label"] for row in rows):
        label_rows = [row for row in rows if row["label"] == label and not np.isnan(_number(row.get(metric)))]
        sign = -1.0 if metric in HIGHER_IS_WORSE else 1.0
        label_rows.sort(key=lambda row: (sign * _number(row[metric]), -_nan_to(_number(row.get("hd95")), np.inf)))
        result[label] = [
            {"case": row["case"], metric: _number(row[metric]), "dice": _number(row["dice"]), "hd95": _number(row["hd95"]), "empty": row["empty"]}
            for row in label_rows[:count]
        ]
    return result


def _nan_to(value: float, replacement: float) -> float:
    return replacement if np.isnan(value) else value


def worst_cases_overall(rows: list[dict], count: int) -> list[dict]:
    """Cases with the lowest mean Dice over labels: where to look first."""
    per_case: dict[str, list[float]] = {}
    for row in rows:
        per_case.setdefault(row["case"], []).append(_number(row["dice"]))
    ranked = sorted(per_case.items(), key=lambda item: float(np.nanmean(item[1])) if item[1] else np.inf)
    return [{"case": case, "mean_dice": float(np.nanmean(values))} for case, values in ranked[:count]]


def lesion_summary(case_rows: list[dict], lesion_rows: list[dict], config: EvaluateConfig) -> dict[str, dict]:
    """Per lesion label, detection pooled over all cases and sensitivity by reference-lesion size bin."""
    summary: dict[str, dict] = {}
    for label in dict.fromkeys(row["label"] for row in case_rows if row.get("lesions_ref", "") != ""):
        rows = [row for row in case_rows if row["label"] == label]
        tp = sum(int(row["lesion_tp"]) for row in rows)
        fn = sum(int(row["lesion_fn"]) for row in rows)
        fp = sum(int(row["lesion_fp"]) for row in rows)
        predicted = sum(int(row["lesions_pred"]) for row in rows)
        sensitivity = tp / (tp + fn) if tp + fn else None
        precision = (predicted - fp) / predicted if predicted else None
        f1 = 2 * sensitivity * precision / (sensitivity + precision) if sensitivity is not None and precision is not None and sensitivity + precision > 0 else None
        by_size = {}
        references = [row for row in lesion_rows if row["label"] == label and row["source"] == "ref"]
        for name in config.size_bin_names():
            in_bin = [row for row in references if row["size_bin"] == name]
            hit = sum(bool(row["detected"]) for row in in_bin)
            by_size[name] = {"lesions": len(in_bin), "detected": hit, "sensitivity": hit / len(in_bin) if in_bin else None}
        summary[label] = {
            "cases": len(rows),
            "lesions_ref": tp + fn,
            "lesions_pred": predicted,
            "tp": tp,
            "fn": fn,
            "fp": fp,
            "sensitivity": sensitivity,
            "precision": precision,
            "f1": f1,
            "fp_per_case": fp / len(rows) if rows else None,
            "sensitivity_by_size": by_size,
        }
    return summary


def brats_summary(case_rows: list[dict], config: EvaluateConfig) -> dict[str, dict]:
    """Per BraTS-scored label: mean lesion-wise Dice and HD95 over cases (the challenge's ranking numbers) and pooled lesion counts."""
    summary: dict[str, dict] = {}
    for label in dict.fromkeys(row["label"] for row in case_rows if row.get("brats_lesion_dice", "") != ""):
        rows = [row for row in case_rows if row["label"] == label]
        dice = [_number(row["brats_lesion_dice"]) for row in rows]
        hd95 = [_number(row["brats_lesion_hd95"]) for row in rows]
        summary[label] = {
            "cases": len(rows),
            "lesionwise_dice": float(np.mean(dice)),
            "lesionwise_hd95_mm": float(np.mean(hd95)),
            "tp": sum(int(row["brats_tp"]) for row in rows),
            "fp": sum(int(row["brats_fp"]) for row in rows),
            "fn": sum(int(row["brats_fn"]) for row in rows),
            "dilation": config.brats_dilation,
            "min_volume_mm3": rows[0].get("brats_min_volume_mm3", config.brats_min_volume_mm3),
            "missing_hd95_mm": config.brats_missing_hd95_mm,
        }
    return summary

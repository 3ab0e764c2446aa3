"""Cross-validation as nnU-Net summarises it: every fold's held-out predictions, per fold and pooled.

A cross-validation run folder is what `medseg train --fold 0,1,2,3,4` writes: ``fold_<k>/`` per fold, each with
``validation/<case>.nii.gz``, the final validation's predictions of the cases it held out, on their raw grids
(:mod:`medseg.train.validation_outputs`: the final weights, no postprocessing). The folds hold out disjoint cases,
so together they predict every case once. They are evaluated in one pass against the references (the usual
summary.json, cases.csv, lesions.csv over all cases: the pooled evaluation, which `medseg report` reads as any
other), and summarised as nnU-Net's ``summary.json``: per label the mean of each metric over the cases, and the
foreground mean, the mean of those label means; once per fold and once pooled over every fold's cases. The summary
goes into summary.json (``cross_validation``) and, as a table, into ``cross_validation.md``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.io.atomic import atomic_path
from medseg.metrics.config import EvaluateConfig
from medseg.metrics.evaluate import EvaluationResult, cases_in, configure, evaluate_pairs, resolve_specs, write_outputs
from medseg.metrics.labels import LabelSource
from medseg.train.validation_outputs import VALIDATION_FOLDER

log = logging.getLogger(__name__)

#: The metrics summarised per fold (each per label and as the foreground mean).
METRICS = ("dice", "iou", "hd95", "nsd")
MARKDOWN = "cross_validation.md"
CONVENTION = ("Per label: the mean over the cases of the fold (or of every fold: pooled), NaN left out; foreground: the mean "
              "of the per-label means (nnU-Net's summary.json 'mean' and 'foreground_mean'). Unlike nnU-Net, a label absent from "
              "both maps of a case scores Dice 1 there (nnU-Net leaves it out); folds: the mean and SD of the folds' values")


def fold_validations(run: Path) -> list[tuple[str, Path]]:
    """[(fold name, its validation folder)]: each numbered ``fold_<k>`` holding one, lowest first; or a fold folder itself."""
    run = Path(run)
    if not run.is_dir():
        return []
    if (run / VALIDATION_FOLDER).is_dir() and any(run.glob("checkpoint_*.pt")):
        return [(run.name, run / VALIDATION_FOLDER)]
    found, without = [], []
    for entry in run.iterdir():
        number = entry.name.removeprefix("fold_")
        if entry.is_dir() and entry.name.startswith("fold_") and number.isdigit():
            (found if (entry / VALIDATION_FOLDER).is_dir() else without).append((int(number), entry))
    if found and without:
        log.warning("%s: %s hold(s) no %s/ predictions (trained by an older medseg, or not finished): left out of the cross-validation",
                    run, ", ".join(entry.name for _, entry in sorted(without)), VALIDATION_FOLDER)
    return [(entry.name, entry / VALIDATION_FOLDER) for _, entry in sorted(found)]


def is_cross_validation_run(path: Path) -> bool:
    return bool(fold_validations(path))


def cross_validation_pairs(run: Path, gt: Path, on_missing: str = "error") -> tuple[list[tuple[str, Path, Path]], dict[str, list[str]], dict[str, str]]:
    """[(case id, prediction, reference)] over every fold, the ids on one side only, and {case id: fold}.

    A prediction without a reference is an error unless ``on_missing`` is skip; references no fold predicts
    (the cases of folds not trained, say) are left out with a warning.
    """
    gt = Path(gt)
    if not gt.is_dir():
        raise InputError(gt, "must be a folder of reference label maps (e.g. the dataset's labelsTr) when the predictions are a cross-validation run")
    fold_of: dict[str, str] = {}
    predictions: dict[str, Path] = {}
    for fold, folder in fold_validations(run):
        for identifier, path in cases_in(folder).items():
            if identifier in fold_of:
                raise InputError(path, f"case {identifier} is held out by {fold_of[identifier]} too; the folds of one cross-validation hold out disjoint cases")
            fold_of[identifier], predictions[identifier] = fold, path
    references = cases_in(gt)
    missing = {"prediction_only": sorted(set(predictions) - set(references)), "reference_only": sorted(set(references) - set(predictions))}
    if missing["prediction_only"]:
        text = f"{len(missing['prediction_only'])} held-out prediction(s) have no reference in {gt}: {', '.join(missing['prediction_only'][:5])}"
        if on_missing == "error":
            raise InputError(Path(run), text + " (set on_missing=skip to evaluate the others)")
        log.warning("skipping %s", text)
    if missing["reference_only"]:
        log.warning("%d reference case(s) are held out by no fold here (folds not trained?): not evaluated", len(missing["reference_only"]))
    common = [identifier for identifier in predictions if identifier in references]
    if not common:
        raise InputError(Path(run), f"no held-out prediction has a reference in {gt}; files are matched by name without extension")
    return [(identifier, predictions[identifier], references[identifier]) for identifier in common], missing, {i: fold_of[i] for i in common}


def _value(value: Any) -> float:
    return math.nan if value in ("", None) else float(value)


def _mean(values: list[float]) -> float | None:
    finite = [value for value in values if not math.isnan(value)]
    return float(np.mean(finite)) if finite else None


def _block(rows: list[dict], labels: list[str], cases: list[str]) -> dict[str, Any]:
    """nnU-Net's summary of some cases: per label the mean of each metric, and the foreground mean over labels."""
    means = {label: {metric: _mean([_value(row.get(metric)) for row in rows if row["label"] == label]) for metric in METRICS} for label in labels}
    foreground = {metric: _mean([np.nan if means[label][metric] is None else means[label][metric] for label in labels]) for metric in METRICS}
    return {"cases": len(cases), "case_ids": cases, "mean": means, "foreground_mean": foreground}


def summarize_folds(case_rows: list[dict], fold_of: Mapping[str, str], labels: list[str]) -> dict[str, Any]:
    """Per fold and pooled: per-label means and the foreground mean of :data:`METRICS`; the folds' mean and SD."""
    folds = {}
    for fold in dict.fromkeys(fold_of.values()):  # in fold order, as cross_validation_pairs lists the cases
        cases = [case for case, owner in fold_of.items() if owner == fold]
        folds[fold] = _block([row for row in case_rows if fold_of[row["case"]] == fold], labels, cases)
    spread = {}
    for metric in METRICS:
        values = [entry["foreground_mean"][metric] for entry in folds.values() if entry["foreground_mean"][metric] is not None]
        spread[metric] = {"mean": float(np.mean(values)) if values else None, "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None}
    return {"folds": folds, "pooled": _block(case_rows, labels, list(fold_of)), "fold_foreground_mean": spread, "convention": CONVENTION}


def _text(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def cross_validation_table(summary: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the summary as text: one row per fold, the pooled row, and the folds' mean (SD)."""
    labels = list(summary["pooled"]["mean"])
    header = ["fold", "cases", *(f"Dice {label}" for label in labels), "Dice foreground", "HD95 foreground (mm)", "NSD foreground"]

    def row(name: str, entry: Mapping[str, Any]) -> list[str]:
        foreground = entry["foreground_mean"]
        return [name, str(entry["cases"]), *(_text(entry["mean"][label]["dice"], 4) for label in labels), _text(foreground["dice"], 4),
                _text(foreground["hd95"], 2), _text(foreground["nsd"], 4)]

    rows = [row(fold, entry) for fold, entry in summary["folds"].items()]
    rows.append(row("pooled", summary["pooled"]))
    spread = summary["fold_foreground_mean"]
    if len(summary["folds"]) > 1:
        def mean_sd(metric: str, digits: int) -> str:
            entry = spread[metric]
            return _text(entry["mean"], digits) + ("" if entry["sd"] is None else f" ({entry['sd']:.{digits}f})")

        rows.append(["mean of folds (SD)", f"{len(summary['folds'])} folds", *("" for _ in labels), mean_sd("dice", 4), mean_sd("hd95", 2), mean_sd("nsd", 4)])
    return header, rows


def markdown(summary: Mapping[str, Any], run_name: str) -> str:
    header, rows = cross_validation_table(summary)
    lines = [f"# Cross-validation of {run_name}", "",
             "Each fold's held-out predictions (`fold_<k>/validation/`: the final weights, no postprocessing) against the references. "
             + summary["convention"] + ".", "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def evaluate_cross_validation(run: str | Path, gt: str | Path, labels: LabelSource = None, lesion_labels=(), tolerance_mm=None,
                              out_dir: str | Path | None = None, config: EvaluateConfig | None = None, label_task: str | None = None,
                              progress: bool = True) -> EvaluationResult:
    """Evaluate every fold's held-out predictions of ``run`` against ``gt`` (a folder), as :func:`medseg.metrics.evaluate.evaluate`
    does one folder; the summary gains ``cross_validation`` (per fold and pooled), and ``out_dir`` gets cross_validation.md."""
    run = Path(run)
    config = configure(config, lesion_labels, tolerance_mm)
    specs = resolve_specs(config, labels, label_task)
    pairs, missing, fold_of = cross_validation_pairs(run, Path(gt), config.on_missing)
    result = evaluate_pairs(pairs, missing, specs, config, progress, run, gt)
    names = [entry["name"] for entry in result.summary["labels"]]
    result.summary["cross_validation"] = summarize_folds(result.cases, fold_of, names)
    folds = result.summary["cross_validation"]["folds"]
    log.info("cross-validation of %d fold(s), %d case(s): pooled foreground Dice %s", len(folds), len(pairs),
             _text(result.summary["cross_validation"]["pooled"]["foreground_mean"]["dice"], 4))
    if out_dir is not None:
        result.out_dir = Path(out_dir)
        result.out_dir.mkdir(parents=True, exist_ok=True)
        table = result.out_dir / MARKDOWN
        with atomic_path(table) as temporary:
            temporary.write_text(markdown(result.summary["cross_validation"], run.name), encoding="utf-8")
        result.files = [table, *write_outputs(result, result.out_dir)]
    return result

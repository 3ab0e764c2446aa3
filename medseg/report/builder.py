"""``build_report(eval_dir, out_html)``: the Python API behind ``medseg report``.

One self-contained HTML file (inline CSS, PNG figures as data URIs, no scripts or external links),
optionally printed to PDF by headless Chromium. The report shows case ids but never input paths or
DICOM patient fields unless ``include_phi=True``: identifying DICOM attributes are not even read
otherwise, and as a last safeguard any absolute input path that still reached the HTML is masked.
"""

from __future__ import annotations

import datetime
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

from medseg import __version__
from medseg.config.loader import build
from medseg.errors import InputError
from medseg.io.atomic import atomic_path, make_parent_folder
from medseg.logging_setup import new_progress
from medseg.report.brats import brats_context
from medseg.report.config import ReportConfig
from medseg.report.figures import METRIC_TITLES, metric_figure, size_bin_figure
from medseg.report.inputs import EvalData, dicom_identifiers, load_evaluation, locate_images, locate_label_maps, model_facts
from medseg.report.overlays import RADIOLOGICAL_NOTE, Thumbnail, anchor_for, case_thumbnail, region_color
from medseg.report.tables import MISSING, lesion_list, lesion_rows, number, per_label_tables, worst_per_label
from medseg.report.uncertainty import ENTROPY_NOTE, entropy_beside

log = logging.getLogger(__name__)

PRIVACY = (
    "Privacy: this report shows case ids (the input file names) but no input paths, and never DICOM patient names, "
    "IDs or dates; case ids are whatever the files were called, so name files without identifiers. "
    "`medseg report --include-phi` adds full paths and any identifying DICOM fields of the images."
)
HIDDEN_PATH = "[path hidden]"


def _dataset_facts(data: EvalData, inputs: dict[str, Any], include_phi: bool) -> list[tuple[str, str]]:
    summary, config = data.summary, data.summary.get("config", {})
    ids = data.case_ids
    facts = [("cases evaluated", str(len(ids)))]
    missing = summary.get("missing") or {}
    if missing.get("prediction_only") or missing.get("reference_only"):
        facts.append(("cases skipped", f"{len(missing.get('reference_only', []))} without prediction, {len(missing.get('prediction_only', []))} without reference"))
    shown, hidden = data.shown_labels(), data.hidden_labels()
    facts.append(("case ids", ", ".join(ids[:30]) + (f", \u2026 ({len(ids) - 30} more)" if len(ids) > 30 else "")))
    facts.append(("labels", f"{len(data.labels)} evaluated, {len(shown)} present in at least one case" + (f" ({len(hidden)} absent everywhere, not listed)" if hidden else "")))
    facts.append(("lesion labels", ", ".join(summary.get("lesion_labels") or []) or "none"))
    tolerance = f"{config.get('tolerance_mm', 1.0):g} mm"
    if config.get("label_tolerance_mm"):
        tolerance += "; per label: " + ", ".join(f"{k} {v:g} mm" for k, v in config["label_tolerance_mm"].items())
    facts.append(("NSD tolerance \u03c4", tolerance))
    conventions = summary.get("conventions") or {}
    if conventions.get("dice_iou"):
        facts.append(("empty masks (Dice, IoU)", conventions["dice_iou"]))
    if conventions.get("empty_distance_cap"):
        facts.append(("distances, one mask empty", conventions["empty_distance_cap"]))
    if config.get("bootstrap_samples") is not None:
        facts.append(("confidence intervals", f"percentile bootstrap of the mean, {config['bootstrap_samples']} resamples, {100 * config.get('confidence', 0.95):g}%, seed {config.get('seed', 0)}"))
    if summary.get("lesion_labels"):
        facts.append(("lesion size bins (mL)", ", ".join(f"{edge:g}" for edge in config.get("lesion_size_bins_ml", []))))
    seconds = (summary.get("seconds") or {}).get("per_case")
    facts.append(("evaluated with", f"medseg {summary.get('medseg_version', '?')}" + (f", {seconds:.2f} s per case" if seconds else "")))
    if include_phi:
        facts += [(f"{name} path", str(value)) for name, value in inputs.items() if value is not None]
    else:
        facts.append(("input paths", "not shown (build with --include-phi to list them)"))
    return facts


def _conventions(data: EvalData) -> list[tuple[str, str]]:
    names = {
        "dice_iou": "Dice and IoU with empty masks", "distances": "HD, HD95, ASSD", "nsd": "NSD (normalised surface Dice)",
        "volumes": "Volumes", "lesions": "Lesion matching", "diameters": "Lesion diameters", "monai": "Agreement with MONAI",
        "aggregates": "Aggregates", "empty_distance_cap": "Distance cap (one mask empty)",
    }  # fmt: skip
    items = [(names.get(key, key), str(value)) for key, value in (data.summary.get("conventions") or {}).items()]
    items.append(("Overlays", RADIOLOGICAL_NOTE))
    items.append(("Privacy", PRIVACY))
    return items


def _caption(thumb: Thumbnail, ranking: dict[str, dict[str, Any]]) -> str:
    facts = ranking.get(thumb.case, {})
    parts = []
    if not math.isnan(facts.get("mean_dice", math.nan)):
        parts.append(f"mean Dice {facts['mean_dice']:.3f} over {facts['labels_present']} label(s) present; lowest: {facts['worst_label']} ({facts['worst_dice']:.3f}).")
    if thumb.error_labels:
        ref, pred = thumb.error_labels
        parts.append(f"Largest disagreement: {thumb.error_ml:.2f} mL, mostly reference {ref} vs predicted {pred}.")
    else:
        parts.append("Prediction and reference agree everywhere.")
    x, y, z = thumb.centre_mm
    parts.append(f"Slice centre (RAS mm): {x:.1f}, {y:.1f}, {z:.1f}. Display: {thumb.window}.")
    return " ".join(parts)


def _thumbnails(data: EvalData, config: ReportConfig, images, pred, gt, include_phi: bool, progress: bool):
    """Render the overlays of the worst ``max_cases`` cases; returns (thumbnails, anchors, notes, image paths)."""
    ranking = data.case_ranking()
    chosen = [entry["case"] for entry in ranking[: config.max_cases]]
    notes: list[str] = []
    if not chosen:
        return [], {}, ["No overlays drawn (max_cases = 0)."] if config.max_cases == 0 else [], {}
    maps, note = locate_label_maps(data, pred, gt)
    if note:
        return [], {}, [f"No overlays: {note}."], {}
    image_paths = locate_images(images, chosen)
    names, regions = data.label_values(), data.regions()
    taken: set[str] = set()
    thumbnails, anchors = [], {}
    by_case = {entry["case"]: entry for entry in ranking}
    with new_progress(TextColumn("drawing overlays"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}", markup=False),
                      enabled=progress) as bar:  # fmt: skip
        task = bar.add_task("", total=len(chosen))
        for rank, identifier in enumerate(chosen, start=1):
            bar.update(task, description=identifier)
            if identifier not in maps:
                notes.append(f"Case {identifier}: label maps not found, no overlay.")
                bar.advance(task)
                continue
            anchor = anchor_for(identifier, taken)
            try:
                thumb = case_thumbnail(identifier, anchor, *maps[identifier], image_paths.get(identifier), names, config, regions,
                                       entropy_path=entropy_beside(maps[identifier][0]))
            except InputError as error:
                notes.append(f"Case {identifier}: no overlay ({error if include_phi else error.problem}).")
                bar.advance(task)
                continue
            if images is not None and identifier not in image_paths:
                thumb.notes.append("no image found for this case: masks only")
            thumbnails.append({**vars(thumb), "rank": rank, "caption": _caption(thumb, by_case)})
            anchors[identifier] = anchor
            bar.advance(task)
    return thumbnails, anchors, notes, image_paths


def _worst_rows(data: EvalData, anchors: dict[str, str]) -> list[dict[str, str]]:
    ranking = {entry["case"]: entry for entry in data.case_ranking()}
    listed = (data.summary.get("worst_cases") or {}).get("overall") or []
    rows = []
    for entry in listed:
        facts = ranking.get(entry["case"], {})
        rows.append({
            "case": entry["case"], "anchor": anchors.get(entry["case"]), "mean_dice": number(entry.get("mean_dice"), 3),
            "mean_dice_present": number(facts.get("mean_dice"), 3),
            "worst_label": facts.get("worst_label") or MISSING, "worst_dice": number(facts.get("worst_dice"), 3),
        })  # fmt: skip
    return rows


def _worst_labels(data: EvalData, limit: int) -> list[dict[str, Any]]:
    entries = worst_per_label(data, limit)
    for entry in entries:
        entry["cases"] = [{**case, "dice_text": f"Dice {number(case.get('dice'), 3)}", "hd95_text": f"HD95 {number(case.get('hd95'), 1)}"} for case in entry["cases"]]
    return entries


def _cross_validation(data: EvalData) -> dict[str, Any] | None:
    """The per-fold and pooled table of a cross-validation evaluation (as cross_validation.md), else None."""
    folds = data.summary.get("cross_validation")
    if not folds:
        return None
    from medseg.metrics.crossval import cross_validation_table

    try:
        header, rows = cross_validation_table(folds)
    except (KeyError, TypeError, AttributeError) as error:
        raise InputError(data.eval_dir / "summary.json", f"'cross_validation' is not a medseg cross-validation summary ({error!r})") from error
    return {"header": header, "rows": rows, "convention": folds.get("convention", "")}


def _plots(data: EvalData, config: ReportConfig) -> list[dict[str, str]]:
    labels = data.shown_labels()
    if not labels:
        return []
    rows = {label: data.rows(label, present_only=True) for label in labels}
    return [{"metric": metric, "title": METRIC_TITLES[metric], "uri": metric_figure(metric, labels, rows, config.plot_dpi)} for metric in config.plot_metrics]


def _mask_paths(html: str, paths: Iterable[Path | None]) -> str:
    """Last safeguard: replace any absolute input path that reached the HTML."""
    texts = set()
    for path in paths:
        if path is None:
            continue
        for text in (str(path), str(Path(path).resolve())):
            if Path(text).is_absolute() and len(text) >= 8:
                texts.add(text)
    for text in sorted(texts, key=len, reverse=True):
        if text in html:
            log.warning("an input path reached the report text and was masked")
            html = html.replace(text, HIDDEN_PATH)
    return html


def render_html(context: dict[str, Any]) -> str:
    from jinja2 import Environment, StrictUndefined

    from medseg.report.template import CSS, TEMPLATE

    environment = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=False, lstrip_blocks=False)
    return environment.from_string(TEMPLATE).render(css=CSS, **context)


def build_report(
    eval_dir: str | Path,
    out_html: str | Path,
    images: str | Path | None = None,
    model: str | Path | None = None,
    include_phi: bool = False,
    pdf: bool = False,
    title: str | None = None,
    max_cases: int | None = None,
    *,
    pred: str | Path | None = None,
    gt: str | Path | None = None,
    notes: Iterable[str] = (),
    config: ReportConfig | None = None,
    progress: bool = True,
) -> Path:
    """Write the HTML report of an evaluation folder (and ``<name>.pdf`` beside it when ``pdf``); return the HTML path.

    ``images``: a folder of images named by case id (``case.nii.gz``, ``case_0000.nii.gz`` or a
    DICOM folder ``case/``) or one image for a single-case evaluation. ``model``: a medseg run
    folder or checkpoint, for the model summary. ``pred``/``gt`` override the label-map paths
    recorded in summary.json (e.g. after moving the data). ``max_cases`` overrides
    ``config.max_cases`` (overlays of the worst cases). ``notes`` are shown under the title.
    """
    config = config or ReportConfig()
    if max_cases is not None:
        config = build(ReportConfig, config.model_dump() | {"max_cases": max_cases}, source="max_cases")
    out_html = Path(out_html)
    if out_html.is_dir():  # refused before the work, not after it
        raise InputError(out_html, "is a folder; give the report's file name, e.g. report.html")
    data = load_evaluation(eval_dir)
    summary, eval_config = data.summary, data.summary.get("config", {})

    thumbnails, anchors, overlay_notes, image_paths = _thumbnails(data, config, images, pred, gt, include_phi, progress)
    phi_cases = []
    if include_phi:
        for identifier, path in image_paths.items():
            fields = [("image path", str(Path(path).resolve()))] + list(dicom_identifiers(Path(path)).items())
            phi_cases.append((identifier, fields))
    ranking_size = len(data.case_ids)
    shown = len(thumbnails)
    intro = f"All {shown} case(s), worst first." if shown == ranking_size else f"The {shown} worst of {ranking_size} cases (lowest mean Dice over the labels present; set max_cases for more)."
    lesions = lesion_rows(data)
    by_size = {label: entry["sensitivity_by_size"] for label, entry in (summary.get("lesions") or {}).items() if entry.get("sensitivity_by_size")}
    inputs = {"evaluation folder": Path(eval_dir).resolve(), "prediction": pred or summary.get("prediction"), "reference": gt or summary.get("reference"), "images": images, "model": model}
    context = {
        "version": __version__,
        "title": title or "Segmentation evaluation report",
        "generated": datetime.date.today().isoformat(),
        "notes": list(notes),
        "include_phi": include_phi,
        "phi_cases": phi_cases,
        "n_cases": ranking_size,
        "single": ranking_size < 2,
        "n_shown": len(data.shown_labels()),
        "dataset_facts": _dataset_facts(data, inputs, include_phi),
        "model_facts": model_facts(model, summary, include_phi),
        "tables": per_label_tables(data),
        "cross_validation": _cross_validation(data),
        "brats": brats_context(data, config.brats_lesions_listed),
        "regions": [{"name": name, "color": region_color(i, config)} for i, (name, _) in enumerate(data.regions())],
        "hidden_labels": data.hidden_labels(),
        "confidence": f"{100 * eval_config.get('confidence', 0.95):g}%",
        "bootstrap": eval_config.get("bootstrap_samples", "?"),
        "tolerance": f"{eval_config.get('tolerance_mm', 1.0):g}",
        "cap": (summary.get("conventions") or {}).get("empty_distance_cap", "image diagonal"),
        "plots": _plots(data, config),
        "lesions": lesions,
        "size_plot": size_bin_figure(by_size, config.plot_dpi) if by_size else None,
        "missed": lesion_list(data, "ref", False, config.missed_lesions_listed),
        "false_positives": lesion_list(data, "pred", False, config.missed_lesions_listed),
        "connectivity": eval_config.get("connectivity", 26),
        "min_overlap": eval_config.get("lesion_min_overlap_voxels", 1),
        "iou_threshold": eval_config.get("lesion_iou_threshold", 0.0),
        "dilation": eval_config.get("lesion_match_dilation_voxels", 0),
        "worst": _worst_rows(data, anchors),
        "worst_labels": _worst_labels(data, config.worst_labels_listed),
        "not_shown": any(case not in anchors for case in data.case_ids),
        "max_cases": config.max_cases,
        "anchors": anchors,
        "thumbnails": thumbnails,
        "overlay_intro": intro,
        "overlay_notes": overlay_notes,
        "uncertainty_note": ENTROPY_NOTE if any(thumb.get("uncertainty_uri") for thumb in thumbnails) else None,
        "reference_color": config.reference_color,
        "prediction_color": config.prediction_color,
        "radiological": RADIOLOGICAL_NOTE,
        "conventions": _conventions(data),
        "privacy": PRIVACY,
    }
    html = render_html(context)
    if not include_phi:
        html = _mask_paths(html, [Path(eval_dir), *(Path(p) for p in (pred, gt, images, model, summary.get("prediction"), summary.get("reference")) if p), *image_paths.values()])
    make_parent_folder(out_html)
    with atomic_path(out_html) as temporary:
        temporary.write_text(html, encoding="utf-8")
    log.info("wrote %s (%.1f MB, %d overlay(s))", out_html.name, len(html) / 1e6, len(thumbnails))
    if pdf:
        from medseg.report.chromium import print_pdf

        print_pdf(out_html, out_html.with_suffix(".pdf"), config.chromium_timeout_s)
    return out_html

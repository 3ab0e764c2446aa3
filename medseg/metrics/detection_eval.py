"""``medseg evaluate``'s lesion-detection pass: collects :class:`~medseg.metrics.detection.CaseDetections` case by
case (inside the evaluation loop, on the volumes it already read) and turns them into the summary's
``lesion_detection`` entry, detections.csv and froc.png. The scores and their definitions are in
:mod:`medseg.metrics.detection`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.io.readers import read_volume
from medseg.io.volume import Volume
from medseg.metrics.config import EvaluateConfig
from medseg.metrics.detection import CaseDetections, case_detections, confidences_for, curve_summary, detection_curve, detection_rows, froc_points, lesions_file, read_lesions
from medseg.metrics.labels import LabelSpec

log = logging.getLogger(__name__)

CONVENTION = (
    "medseg.metrics.detection: predicted lesions = the instances of <case>_instances.nii.gz with their confidences from "
    "<case>_lesions.json, matched to reference lesions by the lesion rule above at every confidence threshold; sensitivity = "
    "detected / reference lesions pooled over cases; FPs per case = unmatched predictions / all evaluated cases; FROC from (0, 0), "
    "linear between operating points (LUNA16), CPM = mean sensitivity at froc_fp_rates; AP = sum of recall gains x precision "
    "(a second prediction on a detected lesion is matched, not an FP)"
)


def wanted(config: EvaluateConfig, pairs: Sequence[tuple[str, Any, Any]], lesion_specs: list[LabelSpec]) -> bool:
    """Whether to run the detection pass (``evaluate.detection``; auto = every prediction has its lesions file)."""
    if config.detection == "off":
        return False
    files = [isinstance(pred, (str, Path)) and lesions_file(Path(pred), identifier).is_file() for identifier, pred, _ in pairs]
    if config.detection == "on":
        if not lesion_specs:
            raise ConfigError("evaluate.detection=on: name the lesion labels to score (--lesion-labels)")
        missing = [pairs[index][0] for index, present in enumerate(files) if not present]
        if missing:
            raise InputError(Path(str(pairs[0][1])).parent, f"evaluate.detection=on, but {len(missing)} prediction(s) have no "
                                                             f"<case>_lesions.json (e.g. {missing[0]}); infer with --instances")
        return True
    if not any(files):
        return False
    if not all(files):
        log.warning("lesion detection (FROC) skipped: only %d of %d predictions have a <case>_lesions.json", sum(files), len(files))
        return False
    if not lesion_specs:
        log.warning("lesions files found, but no lesion label is evaluated; name them (--lesion-labels) for FROC and AP")
        return False
    return True


class DetectionCollector:
    """Per lesion label, the cases' detections, as the evaluation loop reads them."""

    def __init__(self, specs: list[LabelSpec], config: EvaluateConfig, ignore_label: int | None):
        self.specs, self.config, self.ignore_label = specs, config, ignore_label
        self.cases: dict[str, list[CaseDetections]] = {spec.name: [] for spec in specs}
        self.sources: set[str] = set()

    def add(self, identifier: str, prediction: Path, reference: Volume) -> None:
        """The instances beside ``prediction`` against ``reference`` (as read: ignore label not yet removed)."""
        from medseg.metrics.case import check_same_grid

        instance_path, records, source = read_lesions(lesions_file(Path(prediction), identifier))
        if not instance_path.is_file():
            raise InputError(instance_path, f"is named by {identifier}'s lesions file but does not exist")
        instances = read_volume(instance_path, role="label")
        check_same_grid(instances, reference, f"instance map {identifier}", f"reference {identifier}")
        labels, ids = np.asarray(reference.array), np.asarray(instances.array)
        if self.ignore_label is not None:
            ids = np.where(labels == self.ignore_label, 0, ids)
        self.sources.add(source)
        for spec in self.specs:
            ref_mask = np.isin(labels, spec.values)
            self.cases[spec.name].append(case_detections(identifier, ref_mask, ids, confidences_for(records, spec), self.config))

    def summary(self) -> dict[str, Any]:
        """The summary.json ``lesion_detection`` entry."""
        rates = self.config.froc_fp_rates
        labels = {name: curve_summary(detection_curve(cases, self.config), rates) for name, cases in self.cases.items()}
        return {"confidence_source": sorted(self.sources), "fp_rates": list(rates), "convention": CONVENTION, "labels": labels}

    def rows(self) -> list[dict[str, Any]]:
        return [row for name, cases in self.cases.items() for case in cases for row in detection_rows(case, name, self.config)]


def froc_figure(summary: dict[str, Any], path: Path) -> Path | None:
    """froc.png: one FROC per lesion label (log FP axis at the reported rates, their sensitivities marked); None when
    no label has reference lesions."""
    from matplotlib.figure import Figure

    from medseg.io.atomic import atomic_path

    curves = {name: entry for name, entry in summary["labels"].items() if entry["reference_lesions"]}
    if not curves:
        return None
    rates = summary["fp_rates"]
    figure = Figure(figsize=(5.6, 4.0), dpi=110)
    axes = figure.add_subplot()
    shown = np.geomspace(rates[0] / 2, rates[-1] * 1.5, 400)
    for name, entry in curves.items():
        x, y = froc_points(np.array(entry["froc"]["fp_per_case"], dtype=float), np.array(entry["froc"]["sensitivity"], dtype=float))
        line, = axes.plot(shown, np.interp(shown, x, y), label=f"{name}: CPM {entry['cpm']:.3f}, AP {entry['average_precision']:.3f}")
        at = [entry["sensitivity_at_fp_per_case"][f"{rate:g}"] for rate in rates]
        axes.plot(rates, at, "o", color=line.get_color(), markersize=4)
    axes.set_xscale("log", base=2)
    axes.set_xticks(rates, [f"{rate:g}" for rate in rates])
    axes.set_xlim(rates[0] / 2, rates[-1] * 1.5)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("mean false positives per case")
    axes.set_ylabel("lesion sensitivity")
    axes.set_title("FROC (dots: the reported operating points)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    return path

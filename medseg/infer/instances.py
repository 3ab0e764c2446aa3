"""Lesions as instances with a confidence: `medseg infer`'s ``<case>_instances.nii.gz`` and ``<case>_lesions.json``.

**Instances** are the connected components (``infer.connectivity``, 26 by default) of each lesion label
(``infer.lesion_labels``, else the labels named like lesions) in the *final* label map: on the input's
exact grid, after postprocessing, so they are the lesions the mask shows and the ones `medseg
evaluate` counts (:func:`medseg.metrics.lesions.components`, the same function). Region models (BraTS)
take components of the outermost lesion region instead, e.g. whole tumour, whose core and enhancing
parts are parts of that lesion (:func:`lesion_classes`). Instances are numbered 1..N by decreasing
confidence (ties: larger first) in a uint16 map with the mask's grid and header.

**Confidence** in [0, 1], one of two sources (the JSON's ``confidence.source`` says which):

* ``objectness`` (models with a lesion-centre head, :mod:`medseg.models.lesion_instances`): the
  **maximum** over the lesion's voxels of the head's probability (sigmoid, averaged over folds and
  mirror passes like the class probabilities, Gaussian-blended over windows and brought back to the
  input grid by the probabilities' linear resampling). The head is trained to put a peak of 1 at
  each lesion's centre and nothing elsewhere, so the peak is the detector's score for "this
  component is a lesion"; a mean would dilute it by the lesion's rim.
* ``probability`` (every other model, or on request): the **mean** probability of the lesion's label
  over its voxels (softmax channel; for region models, the sigmoid of the region painted as that
  label). The voxels are already argmax winners, so the mean mostly says how clear-cut they were; it is
  a fallback, not a trained detection score.

World coordinates are **RAS+ millimetres**, medseg's frame everywhere (NIfTI/nibabel: x grows towards
the patient's Right, y Anterior, z Superior; negate x and y for DICOM's LPS). Voxel indices are 0-based
``(i, j, k)`` indices of the input file's array, as any NIfTI reader gives them. A bounding box in mm is
the axis-aligned world box around the voxel box's corners (voxel edges, not centres), so it encloses the
lesion also on oblique grids.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from medseg.data.preprocess import restore_image_map
from medseg.errors import ConfigError
from medseg.infer.config import LESION_WORDS, InferConfig
from medseg.infer.postprocess import bounding_box
from medseg.io.volume import Volume
from medseg.metrics.lesions import Component, components, describe_component
from medseg.schema.case import CaseGeometry

log = logging.getLogger(__name__)

ConfidenceSource = Literal["objectness", "probability"]
WORLD_FRAME = "RAS+ mm: x grows to the patient's Right, y Anterior, z Superior (NIfTI/nibabel); negate x and y for DICOM LPS"
VOXEL_FRAME = "0-based (i, j, k) indices of the input file's array; bbox min and max are both inclusive"
RULES = {
    "objectness": "maximum over the lesion's voxels of the lesion-centre head's probability (trained to peak at 1 on lesion centres)",
    "probability": "mean over the lesion's voxels of the probability of its label (softmax channel, or the sigmoid of the region "
                   "painted as that label); the model has no trained lesion-centre head",
}
MAX_INSTANCES = int(np.iinfo(np.uint16).max)


@dataclass(frozen=True)
class LesionClass:
    """One kind of lesion: its name, the label values whose union is its mask, and its probability channel."""

    name: str
    values: tuple[int, ...]
    channel: int


@dataclass(frozen=True)
class InstanceSetup:
    """What one Segmenter writes instances for: the lesion classes (keyed by the label value the records carry as
    ``label_index``) and the confidence source."""

    classes: dict[int, LesionClass]
    source: ConfidenceSource

    @property
    def labels(self) -> tuple[int, ...]:
        return tuple(sorted(self.classes))


def _trained_head(run_config: dict[str, Any]) -> bool:
    objectness = ((run_config or {}).get("loss") or {}).get("objectness") or {}
    return float(objectness.get("weight", 1.0)) > 0


def _region_classes(regions: dict[str, tuple[int, ...]], order: list[int], lesion_labels: list[int] | None) -> dict[int, LesionClass]:
    """Region models (BraTS): a lesion is a component of a *region* (the painted values of every region nested in
    it: whole tumour = oedema + core + enhancing). The regions painted as ``lesion_labels`` (None: the regions named
    like lesions); nested ones are left to the outermost, since one instance map holds one id per voxel."""
    listed = list(regions.items())
    chosen = [r for r, (name, _) in enumerate(listed)
              if (order[r] in lesion_labels if lesion_labels is not None else any(word in name.lower() for word in LESION_WORDS))]
    outer = [r for r in chosen if not any(q != r and set(listed[r][1]) < set(listed[q][1]) for q in chosen)]
    if len(outer) < len(chosen):
        log.info("instances: regions %s lie inside %s and are parts of its lesions, not lesions of their own",
                 ", ".join(listed[r][0] for r in chosen if r not in outer), ", ".join(listed[r][0] for r in outer))
    classes = {}
    for r in outer:
        name, values = listed[r]
        nested = tuple(sorted({order[q] for q, (_, inner) in enumerate(listed) if set(inner) <= set(values)}))
        classes[order[r]] = LesionClass(name, nested, r)
    return classes


def lesion_classes(config: InferConfig, lesion_labels: list[int], names: dict[int, str],
                   regions: dict[str, tuple[int, ...]] | None = None, order: list[int] | None = None) -> dict[int, LesionClass]:
    """The lesion classes of a model: each lesion label on its own (softmax models), or lesion regions."""
    if regions:
        return _region_classes(regions, list(order or []), lesion_labels if config.lesion_labels is not None else None)
    ranked = sorted(names)
    return {label: LesionClass(names[label], (label,), ranked.index(label)) for label in lesion_labels}


def instance_setup(config: InferConfig, classes: dict[int, LesionClass], has_head: bool, run_config: dict[str, Any]) -> InstanceSetup | None:
    """Resolve ``infer.instances`` / ``infer.instance_confidence`` for one model (None: no instance outputs)."""
    if config.instances is False:
        return None
    wanted = config.instance_confidence
    if wanted == "objectness" and not has_head:
        raise ConfigError("infer.instance_confidence=objectness needs a model with a lesion-centre head (model.name lesion_instances)")
    if config.instances is None and not has_head:
        return None
    if not classes:
        if config.instances:
            raise ConfigError("infer.instances: no lesion label; name them with infer.lesion_labels")
        log.warning("the model has a lesion-centre head but no label is a lesion label; set infer.lesion_labels to get instances")
        return None
    trained = has_head and _trained_head(run_config)
    if wanted == "auto" and has_head and not trained:
        log.warning("the model's lesion-centre head was trained with loss.objectness.weight 0; confidences use the label probability")
    source: ConfidenceSource = "objectness" if wanted == "objectness" or (wanted == "auto" and trained) else "probability"
    return InstanceSetup(dict(classes), source)


def model_grid_scores(setup: InstanceSetup, probabilities: torch.Tensor, objectness: torch.Tensor | None) -> dict[int, torch.Tensor]:
    """Per lesion label, its score map on the model grid (one shared map for ``objectness``); copies, so the
    stitched probabilities can be freed."""
    if setup.source == "objectness":
        if objectness is None:
            raise ValueError("objectness confidence needs the stitched objectness map")
        shared = objectness.reshape(probabilities.shape[1:]).float().clone()
        return {label: shared for label in setup.labels}
    return {label: probabilities[kind.channel].float().clone() for label, kind in setup.classes.items()}


def restore_scores(scores: dict[int, torch.Tensor], geometry: CaseGeometry, device: torch.device, chunk_mb: int) -> dict[int, np.ndarray]:
    """Each distinct score map back to the input grid by the probabilities' linear resampling (0 outside the crop)."""
    restored: dict[int, np.ndarray] = {}
    done: dict[int, np.ndarray] = {}
    for label, values in scores.items():
        if id(values) not in done:
            done[id(values)] = restore_image_map(values, geometry, compute_device=device, chunk_mb=chunk_mb, outside=0.0)
        restored[label] = done[id(values)]
    return restored


@dataclass
class LesionInstances:
    """The instance map (uint16, input grid) and one record per lesion, id order."""

    instance_map: np.ndarray
    lesions: list[dict[str, Any]]
    source: ConfidenceSource


@dataclass
class _Candidate:
    confidence: float
    voxels: int
    box: tuple[slice, ...]  # in the full array
    inside: np.ndarray  # the component's voxels within ``box``
    label: int


def _candidates(labels: np.ndarray, label: int, values: tuple[int, ...], score: np.ndarray, source: ConfidenceSource,
                connectivity: int) -> list[_Candidate]:
    """Every connected component of the union of ``values`` (lesion class ``label``), scored inside its bounding box."""
    mask = labels == values[0] if len(values) == 1 else np.isin(labels, values)
    box = bounding_box(mask)
    if box is None:
        return []
    labelled, found = components(mask[box], connectivity)
    result = []
    for component in found:
        inside = labelled[component.box] == component.id
        inner_scores = score[box][component.box][inside]
        confidence = float(np.clip(inner_scores.max() if source == "objectness" else inner_scores.mean(), 0.0, 1.0))
        whole = tuple(slice(outer.start + part.start, outer.start + part.stop) for outer, part in zip(box, component.box))
        result.append(_Candidate(confidence, component.voxels, whole, inside, label))
    return result


def find_instances(labels: np.ndarray, setup: InstanceSetup, scores: dict[int, np.ndarray],
                   connectivity: int = 26) -> tuple[np.ndarray, list[tuple[Component, int, float]]]:
    """Instance map and ``(component, label, confidence)`` in id order (decreasing confidence, then size)."""
    candidates = [c for label, kind in sorted(setup.classes.items())
                  for c in _candidates(labels, label, kind.values, scores[label], setup.source, connectivity)]
    if len(candidates) > MAX_INSTANCES:
        raise ValueError(f"{len(candidates)} lesions: more than a uint16 instance map holds")
    candidates.sort(key=lambda c: (-c.confidence, -c.voxels, c.label))
    instance_map = np.zeros(labels.shape, dtype=np.uint16)
    ordered = []
    for new_id, candidate in enumerate(candidates, start=1):
        instance_map[candidate.box][candidate.inside] = new_id
        ordered.append((Component(new_id, candidate.voxels, candidate.box), candidate.label, candidate.confidence))
    return instance_map, ordered


def world_box(box: tuple[slice, ...], affine: np.ndarray) -> tuple[list[float], list[float]]:
    """World (affine frame) min and max corners of the voxels ``box`` covers, voxel edges included (half a voxel out)."""
    low = [part.start - 0.5 for part in box]
    high = [part.stop - 0.5 for part in box]
    corners = np.array([[c[0], c[1], c[2], 1.0] for c in np.array(np.meshgrid(*zip(low, high), indexing="ij")).reshape(3, -1).T])
    world = (np.asarray(affine, dtype=float) @ corners.T)[:3]
    return [round(float(v), 3) for v in world.min(axis=1)], [round(float(v), 3) for v in world.max(axis=1)]


def lesion_record(instance_map: np.ndarray, component: Component, label: int, name: str, confidence: float, reference: Volume) -> dict[str, Any]:
    """One entry of ``<case>_lesions.json``."""
    voxel_ml = float(abs(np.linalg.det(reference.affine[:3, :3]))) / 1000.0
    described = describe_component(instance_map, component, reference.affine, voxel_ml)
    low, high = world_box(component.box, reference.affine)
    return {
        "id": component.id,
        "label": name,
        "label_index": label,
        "confidence": round(confidence, 6),
        "voxels": component.voxels,
        "volume_ml": round(component.voxels * voxel_ml, 6),
        "bbox_voxels": {"min": [part.start for part in component.box], "max": [part.stop - 1 for part in component.box]},
        "bbox_mm": {"min": low, "max": high},
        "centroid_mm": [round(described[f"centroid_{axis}_mm"], 3) for axis in "xyz"],
        "long_axis_mm": _rounded(described.get("long_axis_mm")),
        "short_axis_mm": _rounded(described.get("short_axis_mm")),
    }


def _rounded(value: Any) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 3)


def lesion_instances(labels: np.ndarray, reference: Volume, setup: InstanceSetup, scores: dict[int, np.ndarray],
                     connectivity: int = 26) -> LesionInstances:
    """Instances of the final label map ``labels`` (input grid) and their records."""
    instance_map, ordered = find_instances(labels, setup, scores, connectivity)
    records = [lesion_record(instance_map, component, label, setup.classes[label].name, confidence, reference)
               for component, label, confidence in ordered]
    return LesionInstances(instance_map, records, setup.source)


def lesions_document(instances: LesionInstances, case: str, setup: InstanceSetup, connectivity: int, model_id: dict[str, Any],
                     version: str) -> dict[str, Any]:
    """``<case>_lesions.json`` but for ``instance_map`` (the map's file name, which the writer adds)."""
    return {
        "case": case,
        "medseg_version": version,
        "model": model_id,
        "lesion_labels": {kind.name: {"label_index": label, "label_values": list(kind.values)} for label, kind in sorted(setup.classes.items())},
        "connectivity": connectivity,
        "confidence": {"source": instances.source, "rule": RULES[instances.source]},
        "world_frame": WORLD_FRAME,
        "voxel_frame": VOXEL_FRAME,
        "lesions": instances.lesions,
    }

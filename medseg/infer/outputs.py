"""Files of one inferred case: the label map, optional per-class masks and probabilities, and the
JSON sidecar. Every file is written atomically, and if any of them fails the ones already written
for that case are removed, so a case has either all its outputs or none.

Layout under the output folder::

    <case>.nii.gz                  multi-label mask on the input's exact grid
    <case>.json                    sidecar (written last: its presence means the case is complete)
    <case>/<label>.nii.gz          --per-class binary masks
    <case>_probabilities.npz       --save-probabilities: float16 (K, X, Y, Z) on the input grid (K classes, or one
                                   sigmoid per region for region models; channel names in "labels")
    <case>_seg.dcm                 --dicom-seg (DICOM series inputs): one DICOM-SEG object referencing the series
    <case>_entropy.nii.gz          --save-uncertainty: float32 predictive entropy on the input grid, nats / ln(K) in [0, 1]
    <case>_mutual_information.nii.gz   --save-uncertainty with TTA or several folds: their disagreement (BALD), same units
    <case>_instances.nii.gz        --instances (default for lesion_instances models): uint16 lesion instance ids on the input grid
    <case>_lesions.json            --instances: one record per instance id (label, voxels, volume, bbox in voxels and RAS mm,
                                   centroid, confidence); see medseg.infer.instances

(With ``-o mask.nii.gz`` the extra files are named after the mask: ``mask_entropy.nii.gz``, ...; the
uncertainty maps take the mask's suffix, ``.nii`` or ``.nii.gz``.) `medseg evaluate` and `medseg
report` skip uncertainty maps and instance maps whose case sits beside them (:data:`SIDE_MAP_SUFFIXES`).

The sidecar holds no patient identifiers: no names, IDs, dates or source paths, only the case
name the user's file was given, geometry, per-label volumes and the model's id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.io.atomic import TEMPORARY_NAME_LIMIT, atomic_path, write_json
from medseg.io.readers import write_label_map, write_volume
from medseg.io.volume import Volume

if TYPE_CHECKING:
    from medseg.infer.uncertainty import UncertaintyMaps

log = logging.getLogger(__name__)

MASK_SUFFIXES = (".nii.gz", ".nii")
ENTROPY_SUFFIX, MUTUAL_INFORMATION_SUFFIX = "_entropy", "_mutual_information"
UNCERTAINTY_SUFFIXES = (ENTROPY_SUFFIX, MUTUAL_INFORMATION_SUFFIX)  # appended to the case name, before the extension
INSTANCES_SUFFIX, LESIONS_SUFFIX = "_instances", "_lesions"  # the instance map (mask suffix) and its records (.json)
SIDE_MAP_SUFFIXES = (*UNCERTAINTY_SUFFIXES, INSTANCES_SUFFIX)  # volumes beside a case's mask that are not cases themselves


@dataclass
class OutputPaths:
    mask: Path
    sidecar: Path
    per_class_dir: Path
    probabilities: Path

    def _beside_mask(self, tail: str, suffix: str | None = None) -> Path:
        """``<mask stem><tail><suffix>`` beside the mask (``suffix`` None: the mask's own)."""
        mask_suffix = next(s for s in MASK_SUFFIXES if self.mask.name.endswith(s))
        return self.mask.with_name(self.mask.name[: -len(mask_suffix)] + tail + (mask_suffix if suffix is None else suffix))

    @property
    def dicom_seg(self) -> Path:
        return self._beside_mask("_seg", ".dcm")

    @property
    def entropy(self) -> Path:
        return self._beside_mask(ENTROPY_SUFFIX)

    @property
    def mutual_information(self) -> Path:
        return self._beside_mask(MUTUAL_INFORMATION_SUFFIX)

    @property
    def instances(self) -> Path:
        return self._beside_mask(INSTANCES_SUFFIX)

    @property
    def lesions(self) -> Path:
        return self._beside_mask(LESIONS_SUFFIX, ".json")

    def names(self) -> list[str]:
        """Every name this case writes in the output folder (files, and the per-class folder), as
        :func:`medseg.io.atomic.leftover_temporaries` keys them."""
        files = (self.mask, self.sidecar, self.probabilities, self.dicom_seg, self.entropy, self.mutual_information, self.instances, self.lesions)
        return [p.name[:TEMPORARY_NAME_LIMIT] for p in files] + [self.per_class_dir.name]


def safe_name(name: str) -> str:
    """A label or case name usable as a file name (no separators or odd characters)."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._")
    return cleaned or "unnamed"


def output_paths(out: Path, case: str, single_file: bool = False) -> OutputPaths:
    """Where a case's outputs go; ``single_file``: ``out`` is the mask path itself (``-o mask.nii.gz``)."""
    if single_file:
        suffix = next(s for s in MASK_SUFFIXES if out.name.endswith(s))
        stem = out.name[: -len(suffix)]
        return OutputPaths(out, out.with_name(f"{stem}.json"), out.with_name(stem), out.with_name(f"{stem}_probabilities.npz"))
    return OutputPaths(out / f"{case}.nii.gz", out / f"{case}.json", out / case, out / f"{case}_probabilities.npz")


def _write_probabilities(probabilities: np.ndarray, reference: Volume, channel_names: list[str], path: Path, compress: bool) -> None:
    save = np.savez_compressed if compress else np.savez
    with atomic_path(path) as temporary:
        save(temporary, probabilities=probabilities, affine=reference.affine, labels=np.array(channel_names))


def _write_uncertainty(maps: UncertaintyMaps, reference: Volume, paths: OutputPaths, written: list[Path]) -> None:
    """float32 maps with the mask's grid and header (image role: they are values, not labels); appended to ``written`` as they appear."""
    for values, path in ((maps.entropy, paths.entropy), (maps.mutual_information, paths.mutual_information)):
        if values is not None:
            write_volume(reference.with_array(np.asarray(values, dtype=np.float32), role="image"), path)
            written.append(path)


def _write_instances(instance_map: np.ndarray, document: dict[str, Any], reference: Volume, paths: OutputPaths, written: list[Path]) -> None:
    """The uint16 instance map with the mask's grid and header, then its records (naming the map's file)."""
    if instance_map.shape != reference.shape:
        raise ValueError(f"instance map {instance_map.shape} is not on the input grid {reference.shape}")
    write_volume(reference.with_array(instance_map.astype(np.uint16, copy=False), role="label"), paths.instances)
    written.append(paths.instances)
    write_json(paths.lesions, document | {"instance_map": paths.instances.name}, make_parents=False)
    written.append(paths.lesions)


def write_case(
    labels: np.ndarray,
    reference: Volume,
    names: dict[int, str],
    sidecar: dict[str, Any],
    paths: OutputPaths,
    *,
    per_class: bool = False,
    probabilities: np.ndarray | None = None,
    compress_probabilities: bool = True,
    extras: Sequence[Callable[[], Path]] = (),
    probability_names: list[str] | None = None,
    uncertainty: UncertaintyMaps | None = None,
    instances: tuple[np.ndarray, dict[str, Any]] | None = None,
) -> list[Path]:
    """Write every output of one case (``extras`` such as a DICOM-SEG after the mask, the sidecar last); on failure remove what was written."""
    written: list[Path] = []
    try:
        write_label_map(labels, reference, paths.mask)
        written.append(paths.mask)
        if per_class:
            paths.per_class_dir.mkdir(parents=True, exist_ok=True)
            for index, name in sorted(names.items()):
                if index == 0:
                    continue
                target = paths.per_class_dir / f"{safe_name(name)}.nii.gz"
                write_label_map((labels == index).view(np.uint8), reference, target)
                written.append(target)
        if probabilities is not None:
            channel_names = probability_names or [names[k] for k in sorted(names)]
            _write_probabilities(probabilities, reference, channel_names, paths.probabilities, compress_probabilities)
            written.append(paths.probabilities)
        if uncertainty is not None:
            _write_uncertainty(uncertainty, reference, paths, written)
        if instances is not None:
            _write_instances(*instances, reference, paths, written)
        for extra in extras:
            written.append(extra())
        sidecar = dict(sidecar)
        sidecar["outputs"] = {"mask": paths.mask.name,
                              "per_class": [str(p.relative_to(paths.mask.parent)) for p in written if p.parent == paths.per_class_dir],
                              "probabilities": paths.probabilities.name if probabilities is not None else None,
                              "dicom_seg": paths.dicom_seg.name if paths.dicom_seg in written else None}
        if uncertainty is not None:
            sidecar["outputs"] |= {"entropy": paths.entropy.name,
                                   "mutual_information": paths.mutual_information.name if paths.mutual_information in written else None}
        if instances is not None:
            sidecar["outputs"] |= {"instances": paths.instances.name, "lesions": paths.lesions.name}
        write_json(paths.sidecar, sidecar, make_parents=False)
        written.append(paths.sidecar)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if per_class and paths.per_class_dir.is_dir() and not any(paths.per_class_dir.iterdir()):
            paths.per_class_dir.rmdir()
        raise
    return written

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

The sidecar holds no patient identifiers: no names, IDs, dates or source paths, only the case
name the user's file was given, geometry, per-label volumes and the model's id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.io.atomic import TEMPORARY_NAME_LIMIT, atomic_path, write_json
from medseg.io.readers import write_label_map
from medseg.io.volume import Volume

log = logging.getLogger(__name__)

MASK_SUFFIXES = (".nii.gz", ".nii")


@dataclass
class OutputPaths:
    mask: Path
    sidecar: Path
    per_class_dir: Path
    probabilities: Path

    @property
    def dicom_seg(self) -> Path:
        return self.mask.with_name(self.mask.name[: -len(next(s for s in MASK_SUFFIXES if self.mask.name.endswith(s)))] + "_seg.dcm")

    def names(self) -> list[str]:
        """Every name this case writes in the output folder (files, and the per-class folder), as
        :func:`medseg.io.atomic.leftover_temporaries` keys them."""
        return [p.name[:TEMPORARY_NAME_LIMIT] for p in (self.mask, self.sidecar, self.probabilities, self.dicom_seg)] + [self.per_class_dir.name]


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
        for extra in extras:
            written.append(extra())
        sidecar = dict(sidecar)
        sidecar["outputs"] = {"mask": paths.mask.name,
                              "per_class": [str(p.relative_to(paths.mask.parent)) for p in written if p.parent == paths.per_class_dir],
                              "probabilities": paths.probabilities.name if probabilities is not None else None,
                              "dicom_seg": paths.dicom_seg.name if paths.dicom_seg in written else None}
        write_json(paths.sidecar, sidecar, make_parents=False)
        written.append(paths.sidecar)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if per_class and paths.per_class_dir.is_dir() and not any(paths.per_class_dir.iterdir()):
            paths.per_class_dir.rmdir()
        raise
    return written

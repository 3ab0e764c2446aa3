"""The final validation's predictions as files: ``<run>/validation/<case>.nii.gz``, each on its case's raw grid.

nnU-Net writes every fold's held-out predictions this way, and its cross-validation summary is computed from
them; ``medseg evaluate --pred RUN --gt labelsTr`` does the same with these (:mod:`medseg.metrics.crossval`). The
probabilities are those the final validation scored (the inference predictor: Gaussian-blended sliding window at
``infer.amp``, the final weights), brought back with :func:`medseg.data.preprocess.restore_labels`, the inverse
`medseg infer` uses, onto the raw shape and affine the cache recorded for the case. No postprocessing, as in
nnU-Net's validation: they are `medseg infer`'s masks of the final checkpoint without ``infer.postprocess`` rules.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medseg.data.cache import case_paths
from medseg.data.preprocess import restore_labels
from medseg.io.readers import write_volume
from medseg.io.volume import Volume
from medseg.schema.case import read_properties

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

VALIDATION_FOLDER = "validation"
SUFFIX = ".nii.gz"


class ValidationWriter:
    """``writer(case_id, probabilities)`` writes one case; made once per final validation."""

    def __init__(self, cache_dir: Path, folder: Path, case_ids: Sequence[str], regions_class_order: Sequence[int] | None,
                 device: torch.device) -> None:
        self.cache_dir, self.folder, self.device = Path(cache_dir), Path(folder), device
        self.order = list(regions_class_order) if regions_class_order else None
        self.folder.mkdir(parents=True, exist_ok=True)
        wanted = {f"{case_id}{SUFFIX}" for case_id in case_ids}
        stale = [path for path in self.folder.glob(f"*{SUFFIX}") if path.name not in wanted]
        for path in stale:  # an earlier split's cases would join this fold's in a cross-validation summary
            path.unlink()
        if stale:
            log.info("%s: removed %d prediction(s) of cases this fold does not hold out", self.folder, len(stale))

    def __call__(self, case_id: str, probabilities: torch.Tensor) -> Path:
        geometry = read_properties(case_paths(self.cache_dir, case_id)["properties"]).geometry
        labels, _ = restore_labels(probabilities, geometry, compute_device=self.device, regions_class_order=self.order)
        return write_volume(Volume(labels, np.asarray(geometry.original_affine), "label"), self.folder / f"{case_id}{SUFFIX}")

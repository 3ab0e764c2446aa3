"""Inference: checkpoints or fold ensembles on NIfTI/NRRD/MHA files and DICOM series, with masks
written on the input's exact grid (see :mod:`medseg.infer.segmenter` and :mod:`medseg.infer.pipeline`).
Attributes load lazily so that every config load (it reads :mod:`medseg.infer.config`) imports no torch.
"""

from __future__ import annotations

from medseg._lazy import lazy_exports

__getattr__, __all__ = lazy_exports("medseg.infer", {
    "medseg.infer.config": ["InferConfig", "PostprocessRule"],
    "medseg.infer.model": ["LoadedModel", "load_model"],
    "medseg.infer.pipeline": ["InferFailures", "InferReport", "infer"],
    "medseg.infer.segmenter": ["CasePrediction", "Segmenter"],
})

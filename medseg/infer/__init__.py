"""Inference: checkpoints or fold ensembles on NIfTI/NRRD/MHA files and DICOM series, with masks
written on the input's exact grid (see :mod:`medseg.infer.segmenter` and :mod:`medseg.infer.pipeline`).
Attributes load lazily so that every config load (it reads :mod:`medseg.infer.config`) imports no torch.
"""

from __future__ import annotations

from medseg._lazy import lazy_exports

_EXPORTS = {
    "InferConfig": "medseg.infer.config",
    "PostprocessRule": "medseg.infer.config",
    "LoadedModel": "medseg.infer.model",
    "load_model": "medseg.infer.model",
    "InferFailures": "medseg.infer.pipeline",
    "InferReport": "medseg.infer.pipeline",
    "infer": "medseg.infer.pipeline",
    "CasePrediction": "medseg.infer.segmenter",
    "Segmenter": "medseg.infer.segmenter",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("medseg.infer", _EXPORTS)

"""Inference: checkpoints or fold ensembles on NIfTI/NRRD/MHA files and DICOM series, with masks
written on the input's exact grid (see :mod:`medseg.infer.pipeline`)."""

from medseg.infer.config import InferConfig, PostprocessRule, load_infer_config
from medseg.infer.model import LoadedModel, load_model
from medseg.infer.pipeline import CasePrediction, InferFailures, InferReport, Segmenter, infer

__all__ = [
    "CasePrediction",
    "InferConfig",
    "InferFailures",
    "InferReport",
    "LoadedModel",
    "PostprocessRule",
    "Segmenter",
    "infer",
    "load_infer_config",
    "load_model",
]

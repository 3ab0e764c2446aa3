"""Inference: checkpoints or fold ensembles on NIfTI/NRRD/MHA files and DICOM series, with masks
written on the input's exact grid (see :mod:`medseg.infer.segmenter` and :mod:`medseg.infer.pipeline`)."""

from medseg.infer.config import InferConfig, PostprocessRule
from medseg.infer.model import LoadedModel, load_model
from medseg.infer.pipeline import InferFailures, InferReport, infer
from medseg.infer.segmenter import CasePrediction, Segmenter

__all__ = ["CasePrediction", "InferConfig", "InferFailures", "InferReport", "LoadedModel", "PostprocessRule", "Segmenter", "infer", "load_model"]

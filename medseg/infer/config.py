"""``infer:`` config section: every setting of `medseg infer`, with the reason for its default.

Override from the command line with ``--set infer.overlap=0.25`` or from any medseg config file's
``infer:`` mapping; a model's own run config (saved at training time) is the starting point. Postprocessing rules are keyed by label name or index::

    infer:
      postprocess:
        liver: {largest_component: true}
        tumor: {min_size_mm3: 50}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from medseg.config import Section, yaml_switch

#: Label names that count as lesions (connected components are counted in the sidecar) when
#: ``lesion_labels`` is not set.
LESION_WORDS = ("tumor", "tumour", "lesion", "metasta", "nodule", "cancer", "cyst", "carcinoma")


class PostprocessRule(Section):
    """What to clean up in one label's mask after the argmax."""

    largest_component: bool = Field(False, description="keep only the largest connected component (organs that are one piece)")
    min_size_mm3: float = Field(0.0, ge=0, description="remove connected components smaller than this volume (mm^3); 0 keeps all")
    within: list[str | int] = Field(
        default_factory=list,
        description="labels (names or indices) that enclose this one, e.g. a liver tumour lies in the liver: a component is removed "
        "when less than within_fraction of the voxels just outside it (its one-voxel shell) carry one of these labels",
    )
    within_fraction: float = Field(
        0.5, gt=0, le=1, description="share of a component's shell that must be a 'within' label for the component to stay"
    )


class InferConfig(Section):
    overlap: float = Field(0.5, ge=0, lt=1, description="sliding-window overlap per axis (nnU-Net 0.5; MONAI's default 0.25 is faster but shows seams)")
    sw_batch_size: int | None = Field(None, ge=1, description="windows per network call; None = 4 on CUDA; on CPU about 1M voxels per call (1 window of 96^3, 8 of 32x32x16)")
    tta: bool | None = Field(
        False,
        description="mirroring test-time augmentation over all spatial axes (8 passes in 3D). Off by default: on hippocampus "
        "fold 0 it bought +0.003 mean Dice (0.876/0.859 -> 0.879/0.862) for +20% time there, +0.4 s (3 mm) to +3.6 s (1.5 mm) "
        "per 512x512x300 CT on an H200 and 8x the time on a CPU (reports/gpu_benchmark.md); None (older configs) = off",
    )
    tta_axes: list[int] | None = Field(None, description="spatial axes (0, 1, 2 of the RAS array) to mirror; None = all")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ...")
    stitch_device: Literal["auto", "gpu", "cpu"] = Field(
        "auto",
        description="where the sliding-window outputs are accumulated; auto = on the GPU while the class maps fit in "
        "stitch_gpu_fraction of its free memory, else on the CPU, so GPU memory does not grow with image size",
    )
    stitch_gpu_fraction: float = Field(0.4, gt=0, le=1, description="share of free GPU memory that GPU stitching may use (auto mode)")
    amp: Literal["auto", "bf16", "fp16", "off"] = Field(
        "auto", description="mixed precision: auto = bf16/fp16 on CUDA, off on CPU. bf16 on CPUs with AMX/AVX512-BF16 runs the "
        "network 2-3x faster, but its masks are not PyTorch fp32's (mean Dice 0.999 on hippocampus fold 0, 0.996 on a CT; "
        "reports/onnx_cpu.md), so it is opt-in"
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for torch; None = all cores")
    compile: Literal["auto", "on", "off"] = Field(
        "auto",
        description="torch.compile the network with frozen weights: on CPU ~1.9x faster per window after a one-off compile "
        "of ~18 s per network (~5 s with a warm on-disk cache); auto = on CPU when the run holds at least compile_min_windows "
        "windows per fold network. Compiled and eager results differ by float rounding (~1e-5 on logits)",
    )
    compile_min_windows: int = Field(
        80, ge=1, description="auto compile threshold, in 96^3-window equivalents over all cases, folds and TTA passes "
        "(80 x 0.3 s saved > 18 s compile)",
    )
    postprocess: dict[str, PostprocessRule] = Field(default_factory=dict, description="per-label cleanup rules, keyed by label name or index")
    connectivity: Literal[6, 18, 26] = Field(26, description="voxel connectivity of connected components (postprocessing and lesion counts)")
    lesion_labels: list[str] | None = Field(
        None, description="labels (names or indices) whose connected components are counted as lesions; None = names containing " + ", ".join(LESION_WORDS)
    )
    instances: bool | None = Field(
        None, description="also write the lesions as instances: <case>_instances.nii.gz (uint16 instance ids on the input grid: the connected "
        "components of each lesion label after postprocessing, id 1 = most confident) and <case>_lesions.json (per lesion: label, voxels, "
        "volume, bounding box in voxels and world mm, centroid, confidence); None = auto: on for models with a lesion-centre head "
        "(model lesion_instances)")
    instance_confidence: Literal["auto", "objectness", "probability"] = Field(
        "auto", description="a lesion's confidence: objectness = the peak lesion-centre probability of the head inside it (models with "
        "the head); probability = the mean probability of its label inside it (any model); auto = objectness when the model has a "
        "trained head, else probability. The JSON says which was used")
    per_class: bool = Field(False, description="also write one binary mask per label: <case>/<label>.nii.gz")
    dicom_seg: bool = Field(False, description="for DICOM series inputs, also write the mask as one DICOM-SEG object referencing the series: <case>_seg.dcm")
    dicom_seg_type: Literal["binary", "labelmap"] = Field("binary", description="binary SEG (what every viewer reads) or the compact Label Map SEG")
    checkpoint: Literal["final", "best"] = Field(
        "final", description="which weights of a run folder (of each fold) to load: final = checkpoint_last.pt, the weights training "
        "ended with (what nnU-Net serves); best = checkpoint_best.pt, the best EMA of validation Dice over the periodic validation "
        "cases. Read before the model is, so a run's saved infer: section does not choose it; a .pt or ONNX model is used as given")
    backend: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="what runs the network: torch, or onnxruntime for models exported with `medseg export onnx` (CPU); "
        "auto = onnxruntime when MODEL is an .onnx file or a folder of them")
    save_probabilities: bool = Field(False, description="also write class probabilities on the input grid as float16 <case>_probabilities.npz")
    compress_probabilities: bool = Field(True, description="zip-compress the probabilities file (smaller, slower to write)")
    save_uncertainty: bool = Field(
        False, description="also write voxel-wise predictive entropy of the averaged softmax on the input grid, <case>_entropy.nii.gz "
        "(float32, nats / ln(K): 0 = certain, 1 = uniform), and with TTA or several folds their disagreement, "
        "<case>_mutual_information.nii.gz (BALD, same units); the sidecar gets a per-structure summary. Softmax models only; "
        "costs two float32 maps on the model grid")
    restore_chunk_mb: int = Field(256, ge=8, description="memory for one slab of class probabilities while mapping them back to the input grid")
    missing_channels: list[str | int] = Field(
        default_factory=list, description="input channels (modalities) the cases lack on purpose, by the plan's channel name or "
        "0-based index: read without them and filled as missing (0 after normalisation; dynunet_midfusion leaves them out of its "
        "modality mean). An unnamed missing channel file stays an error")
    prefetch: bool = Field(True, description="read and preprocess the next case in a background thread while the current one is predicted (holds two cases in memory)")


    @field_validator("compile", "amp", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object, info: ValidationInfo) -> object:
        return yaml_switch(value, on_means_on=info.field_name == "compile")

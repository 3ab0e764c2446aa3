"""Config sections of the data pipeline: ``fingerprint``, ``plan`` (incl. preprocessing choices) and ``preprocess``.

Every value that changes the cached arrays lives in :class:`PlanConfig` and ends up in the plan
JSON, so the plan's preprocessing hash covers it. :class:`PreprocessConfig` only says *how* to run
(workers), which never changes the result.

Override from YAML (``plan: {gpu_memory_gb: 24}``) or the command line
(``--set plan.target_spacing=[1,1,3]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from medseg.config import Section

NormalizationScheme = Literal["ct", "zscore", "none", "rescale"]


class FingerprintConfig(Section):
    samples_per_case: int = Field(10000, ge=100, description="Foreground voxels sampled per case and channel for intensity statistics (bounds memory).")
    seed: int = Field(0, description="Seed of the voxel sampling, so fingerprints are reproducible.")


class PlanConfig(Section):
    # --- target spacing ---------------------------------------------------------------------------
    target_spacing: list[float] | None = Field(None, description="Force the target spacing (mm, RAS axes); default: derived from the data.")
    anisotropy_ratio: float = Field(3.0, gt=1, description="An axis counts as low-resolution when its spacing exceeds this times the others'.")
    anisotropic_spacing_percentile: float = Field(10.0, ge=0, le=100, description="Percentile of the low-res axis spacings used when the anisotropy rule fires.")
    # --- normalization ------------------------------------------------------------------------------
    normalization: dict[int, NormalizationScheme] = Field(default_factory=dict, description="Per-channel scheme override, e.g. {0: zscore}.")
    nonzero_mask_crop_fraction: float = Field(0.75, gt=0, le=1, description="MR/other z-score inside the nonzero mask when cropping kept less than this share of voxels (median over cases).")
    # --- resampling (recorded in the plan, so it is part of the cache hash) -------------------------
    image_order: Literal[0, 1, 3] = Field(3, description="Spline order for images (3 = cubic).")
    label_resampling: Literal["nearest", "per_class_linear"] = Field("per_class_linear", description="How label maps are resampled.")
    separate_axis_ratio: float = Field(3.0, gt=1, description="Resample the coarse axis separately when its spacing exceeds this times the finest.")
    out_of_plane_order: Literal[0, 1] = Field(0, description="Order along the separately resampled coarse axis (images; labels always use 0).")
    class_locations_per_class: int = Field(2000, ge=1, description="Voxel coordinates sampled per class and case for foreground oversampling.")
    seed: int = Field(0, description="Seed of the class-location sampling.")
    # --- the machine and its budget (see medseg.data.devices) ---------------------------------------
    device: str = Field("auto", description="machine to plan for: auto (this one: its CUDA GPU, else its CPU), cpu, cuda, or a preset "
                        "(gpu-8gb, rtx4090, a100-40gb, a100, h100, h200, laptop, cpu-2core)")
    gpu_memory_gb: float | None = Field(None, gt=0, description="GPU memory budget; None = the GPU's (detected or preset), capped at max_gpu_memory_gb.")
    max_gpu_memory_gb: float = Field(40.0, gt=0, description="Cap on a detected budget: bigger patches and batches stop paying (nnU-Net's largest ResEnc preset plans 40 GB).")
    memory_overhead_gb: float = Field(1.5, ge=0, description="Part of the budget kept for the CUDA context, weights, optimizer state and workspaces.")
    activation_bytes: int = Field(2, ge=1, description="Bytes per stored activation (2 with mixed precision).")
    cpu_cores: int | None = Field(None, ge=1, description="CPU cores to plan for; None = detected (or the preset's).")
    cpu_step_voxels_per_core: float = Field(
        90000.0, gt=0, description="CPU plans: patch voxels x batch one training step may process per core (2 cores: batch 2 of "
        "40x56x40, measured as the fastest learner on 2 cores, reports/train_hippocampus_cpu.md).")
    cpu_base_features: int = Field(16, ge=1, description="CPU plans: width of the first stage (4x fewer FLOPs than nnU-Net's 32).")
    cpu_max_features_3d: int = Field(128, ge=1)
    cpu_max_features_2d: int = Field(256, ge=1)
    lowres_patch_fraction: float = Field(
        0.25, gt=0, le=1, description="GPU plans: plan 3d_lowres when the 3d_fullres patch covers less than this share of the median case (nnU-Net's rule).")
    cpu_lowres_patch_fraction: float = Field(
        0.5, gt=0, le=1, description="The same share for CPU plans, whose voxel budget keeps patches small: the coarser grid gives each "
        "patch the context to tell an organ from its mirror image (synthetic CT, 8 CPU minutes: liver Dice 0.73 at 0.25, 0.9+ at 0.5).")
    base_features: int = Field(32, ge=1)
    max_features_3d: int = Field(320, ge=1)
    max_features_2d: int = Field(512, ge=1)
    convs_per_stage: int = Field(2, ge=1)
    min_feature_map_size: int = Field(4, ge=1, description="Stop pooling an axis once it would fall below this many voxels.")
    max_pooling_steps: int = Field(6, ge=0, description="At most this many down-sampling steps (stages - 1).")
    initial_patch_voxels_3d: float = Field(256.0**3, gt=0, description="Starting 3D patch volume in voxels (shape follows the spacing's aspect ratio).")
    initial_patch_voxels_2d: float = Field(2048.0**2, gt=0, description="Starting 2D patch area in voxels.")
    min_batch_size: int = Field(2, ge=1)
    max_batch_size: int = Field(256, ge=1)
    max_dataset_fraction_per_batch: float = Field(0.05, gt=0, le=1, description="A batch may cover at most this share of all dataset voxels (avoids overfitting small sets).")
    patch_size_3d: list[int] | None = Field(None, description="Force the 3D patch size.")
    batch_size_3d: int | None = Field(None, ge=1, description="Force the 3D batch size.")
    patch_size_2d: list[int] | None = Field(None, description="Force the 2D patch size.")
    batch_size_2d: int | None = Field(None, ge=1, description="Force the 2D batch size.")

    @field_validator("target_spacing", "patch_size_3d", "patch_size_2d")
    @classmethod
    def _positive_sizes(cls, value: list | None, info: ValidationInfo) -> list | None:
        length, what = {"target_spacing": (3, "values (mm)"), "patch_size_3d": (3, "integers"), "patch_size_2d": (2, "integers")}[info.field_name]
        if value is not None and (len(value) != length or min(value) <= 0):
            raise ValueError(f"{info.field_name} needs {'three' if length == 3 else 'two'} positive {what}")
        return value


class PreprocessConfig(Section):
    workers: int = Field(2, ge=1, description="Parallel worker processes (1 = run in this process).")


def default_work_dir(dataset_name: str, base: str | Path = "medseg_work") -> Path:
    """Where ``medseg plan``/``preprocess`` put plans, fingerprint and cache unless told otherwise.

    Outside the raw dataset on purpose: raw data is often read-only and must stay untouched.
    """
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in dataset_name) or "dataset"
    return Path(base) / safe

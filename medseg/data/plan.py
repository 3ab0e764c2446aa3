"""Plan: from a fingerprint to every preprocessing and network-shape choice, each with its reason.

The rules follow nnU-Net (Isensee et al., Nature Methods 2021) and are written out in the plan:

* **target spacing**: per-axis median of the case spacings. When the coarsest axis is more than
  ``anisotropy_ratio`` (3) times coarser than the others *and* has few voxels (median size x3 below
  the other axes'), its target is the 10th percentile of that axis's spacings instead, so thick
  slices are not interpolated into many invented ones.
* **normalization**: CT channels are clipped to the foreground 0.5/99.5 percentiles and z-scored
  with the dataset foreground mean/std (HU are comparable across scans); MR and other channels
  are z-scored per image, inside the nonzero mask when cropping removed at least 25% of the
  voxels (the zeros around the body are then not tissue).
* **topology**: pool an axis (stride 2) while it stays >= 2x ``min_feature_map_size`` voxels and its
  spacing is within 2x of the finest pooled axis; a kernel is 3 along an axis once that axis's
  spacing is within 2x of the finest, else 1 (so thick-slice axes start with in-plane 1x3x3
  convolutions). The patch is rounded up to a multiple of the total stride per axis.
* **patch and batch from a memory budget**: start from a large patch with the aspect ratio of the
  spacing, clip to the median shape, and shrink the axis that is largest relative to the median
  shape until ``min_batch_size`` patches fit in ``gpu_memory_gb``; then use the largest batch
  that fits, but never more than ``max_dataset_fraction_per_batch`` of all dataset voxels.

Memory estimate (per sample, documented so it can be checked): a U-Net stage at resolution
``n`` voxels with ``f`` features stores, for backward, about ``convs_per_stage * 3`` tensors
(convolution, normalization and activation outputs) in the encoder and, above the bottleneck,
``1 + 2 + convs_per_stage * 3`` in the decoder (transposed convolution, concatenation, convs):
``bytes = activation_bytes * sum_stages(k_stage * f * n)``; add ``memory_overhead_gb`` once for the
CUDA context, weights and optimizer state. With the defaults a 128x160x112 patch (nnU-Net's
BraTS patch) at batch 2 needs ~7.0 GB, consistent with nnU-Net's 8 GB reference budget. Checked
on CPU against MONAI ``DynUNet`` (instance norm, the plan's kernels/strides): the estimate is
1.25-1.3x the bytes autograd actually saves for backward (64^3, 40x56x40 and 128x128x16 patches),
a margin for the backward pass's temporary buffers. Not yet measured on a GPU.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medseg import __version__
from medseg.data.cache import preprocessing_hash, read_json, write_json
from medseg.data.config import DataConfig, PlanConfig
from medseg.data.dataset import DatasetDescription, load_dataset, normalization_directive
from medseg.data.fingerprint import load_or_compute_fingerprint
from medseg.errors import ConfigError, InputError

log = logging.getLogger(__name__)

PLAN_VERSION = 1


# --- target spacing ------------------------------------------------------------------------------
def target_spacing(spacings: np.ndarray, shapes: np.ndarray, config: PlanConfig) -> tuple[list[float], str]:
    """Target spacing and a sentence saying which rule chose it."""
    if config.target_spacing is not None:
        return [float(v) for v in config.target_spacing], "set in the config (plan.target_spacing)"
    target = np.median(spacings, axis=0)
    median_shape = np.median(shapes, axis=0)
    coarse = int(np.argmax(target))
    others = [a for a in range(3) if a != coarse]
    ratio = target[coarse] / max(target[others].max(), 1e-8)
    few_voxels = median_shape[coarse] * config.anisotropy_ratio < median_shape[others].min()
    if ratio > config.anisotropy_ratio and few_voxels:
        percentile = float(np.percentile(spacings[:, coarse], config.anisotropic_spacing_percentile))
        # never finer than the in-plane spacing: the axis would become the fine one
        chosen = max(percentile, float(target[others].max()) + 1e-5)
        reason = (
            f"anisotropic: axis {coarse} median spacing {target[coarse]:.3g} mm is {ratio:.1f}x the others "
            f"(> {config.anisotropy_ratio:g}) and it has few voxels (median {median_shape[coarse]:.0f}, "
            f"x{config.anisotropy_ratio:g} is below the other axes' {median_shape[others].min():.0f}), so it uses the "
            f"{config.anisotropic_spacing_percentile:g}th percentile of its spacings ({chosen:.3g} mm); other axes use the median"
        )
        target[coarse] = chosen
    else:
        why = f"max/min spacing ratio {ratio:.2f} <= {config.anisotropy_ratio:g}" if ratio <= config.anisotropy_ratio else (
            f"axis {coarse} is {ratio:.1f}x coarser but has enough voxels ({median_shape[coarse]:.0f})"
        )
        reason = f"median spacing per axis ({why})"
    return [float(v) for v in target], reason


# --- normalization -------------------------------------------------------------------------------
def normalization_schemes(description: DatasetDescription, fingerprint: dict[str, Any], config: PlanConfig) -> list[dict[str, Any]]:
    crop_fraction = float(fingerprint["median_crop_fraction"])
    use_mask = crop_fraction < config.nonzero_mask_crop_fraction
    schemes = []
    for index, (name, modality) in enumerate(zip(description.channel_names, description.modalities)):
        scheme = config.normalization.get(index) or normalization_directive(name) or ("ct" if modality == "CT" else "zscore")
        entry: dict[str, Any] = {"channel": index, "name": name, "modality": modality, "scheme": scheme}
        if scheme == "ct":
            stats = fingerprint["intensity_foreground"][index]
            if not math.isfinite(stats["mean"]):
                raise InputError(description.root, f"channel {name}: no labelled foreground voxels, cannot derive CT normalization")
            entry.update(
                clip=[stats["percentile_00_5"], stats["percentile_99_5"]],
                mean=stats["mean"],
                std=stats["std"],
                reason="CT: clip to the dataset foreground 0.5/99.5 percentiles, z-score with the dataset foreground mean/std",
            )
        elif scheme == "zscore":
            entry["use_nonzero_mask"] = bool(use_mask)
            entry["reason"] = (
                f"{modality}: per-image z-score "
                + (f"inside the nonzero mask (cropping kept {crop_fraction:.0%} of voxels, < {config.nonzero_mask_crop_fraction:.0%})" if use_mask
                   else f"over the whole cropped image (cropping kept {crop_fraction:.0%} of voxels)")
            )
        elif scheme == "rescale":
            entry["reason"] = "channel name asks for rescaling to [0, 1]"
        else:
            entry["reason"] = "channel name or config asks for no normalization"
        if index in config.normalization:
            entry["reason"] = f"set in the config (plan.normalization.{index}); " + entry["reason"]
        schemes.append(entry)
    return schemes


# --- topology ------------------------------------------------------------------------------------
def topology(spacing: Sequence[float], patch: Sequence[int], config: PlanConfig) -> dict[str, Any]:
    """Strides and kernel sizes per stage for ``patch`` at ``spacing``; patch rounded up to fit the strides."""
    dims = len(spacing)
    size = np.asarray(patch, dtype=float)
    current = np.array(spacing, dtype=float)  # a copy: pooling doubles it in place
    kernel = [3 if s / current.min() < 2 else 1 for s in current]
    strides: list[list[int]] = [[1] * dims]
    kernels: list[list[int]] = [list(kernel)]
    pools = np.zeros(dims, dtype=int)
    for _ in range(config.max_pooling_steps):
        poolable = [a for a in range(dims) if size[a] >= 2 * config.min_feature_map_size]
        if not poolable:
            break
        finest = min(current[a] for a in poolable)
        poolable = [a for a in poolable if current[a] / finest < 2]
        if len(poolable) == 1 and size[poolable[0]] < 3 * config.min_feature_map_size:
            break  # pooling one lone axis only pays off when it is clearly large
        stride = [2 if a in poolable else 1 for a in range(dims)]
        for a in poolable:
            current[a] *= 2
            size[a] = math.ceil(size[a] / 2)
            pools[a] += 1
        kernel = [3 if kernel[a] == 3 or current[a] / current.min() < 2 else 1 for a in range(dims)]
        strides.append(stride)
        kernels.append(list(kernel))
    kernels[-1] = [3] * dims  # the bottleneck always sees a full 3x3(x3) neighbourhood
    divisor = [2 ** int(p) for p in pools]
    rounded = [int(math.ceil(p / d) * d) for p, d in zip(patch, divisor)]
    return {"strides": strides, "kernel_sizes": kernels, "divisible_by": divisor, "patch_size": rounded}


def activation_bytes_per_sample(patch: Sequence[int], strides: Sequence[Sequence[int]], features: Sequence[int], config: PlanConfig) -> float:
    """The documented estimate (module docstring) of stored activations for one sample."""
    voxels = float(np.prod(patch))
    total = 0.0
    stages = len(strides)
    encoder = 3 * config.convs_per_stage
    decoder = 3 + 3 * config.convs_per_stage
    for stage, (stride, width) in enumerate(zip(strides, features)):
        voxels /= float(np.prod(stride))
        tensors = encoder + (decoder if stage < stages - 1 else 0)
        total += tensors * width * voxels
    return total * config.activation_bytes


def _features(stages: int, maximum: int, config: PlanConfig) -> list[int]:
    return [min(config.base_features * 2**s, maximum) for s in range(stages)]


def _configuration(
    spacing: np.ndarray,
    median_shape: np.ndarray,
    dataset_voxels: float,
    initial_voxels: float,
    max_features: int,
    forced_patch: list[int] | None,
    forced_batch: int | None,
    config: PlanConfig,
) -> dict[str, Any]:
    budget = (config.gpu_memory_gb - config.memory_overhead_gb) * 1024**3
    if budget <= 0:
        raise ConfigError(f"plan.gpu_memory_gb={config.gpu_memory_gb} leaves nothing after the {config.memory_overhead_gb} GB overhead")
    if forced_patch is not None:
        patch = np.asarray(forced_patch, dtype=float)
    else:
        aspect = 1.0 / spacing
        patch = aspect * (initial_voxels / np.prod(aspect)) ** (1.0 / len(spacing))
        patch = np.minimum(np.round(patch), median_shape)
    patch = np.maximum(np.round(patch), 1).astype(int)
    shrunk = 0
    while True:
        topo = topology(spacing, patch, config)
        features = _features(len(topo["strides"]), max_features, config)
        per_sample = activation_bytes_per_sample(topo["patch_size"], topo["strides"], features, config)
        if forced_patch is not None or per_sample * config.min_batch_size <= budget:
            break
        ratio = np.asarray(topo["patch_size"]) / median_shape
        axis = int(np.argmax(ratio))
        step = topo["divisible_by"][axis]
        if patch[axis] - step < config.min_feature_map_size:
            candidates = [a for a in range(len(patch)) if patch[a] - topo["divisible_by"][a] >= config.min_feature_map_size]
            if not candidates:
                log.warning("even the smallest patch exceeds the %.1f GB budget; keeping %s", config.gpu_memory_gb, list(patch))
                break
            axis = max(candidates, key=lambda a: ratio[a])
            step = topo["divisible_by"][axis]
        patch[axis] -= step
        shrunk += 1
    patch_size = topo["patch_size"]
    patch_voxels = float(np.prod(patch_size))
    fit = int(budget // max(per_sample, 1.0))
    cap = int(config.max_dataset_fraction_per_batch * dataset_voxels / patch_voxels)
    batch = forced_batch or int(max(config.min_batch_size, min(fit, cap, config.max_batch_size)))
    estimate = (per_sample * batch) / 1024**3 + config.memory_overhead_gb
    if estimate > config.gpu_memory_gb:
        log.warning("patch %s x batch %d is estimated at %.1f GB, above the %.1f GB budget", list(patch_size), batch, estimate, config.gpu_memory_gb)
    if forced_batch is None:
        limits = {"the memory budget": fit, f"the {config.max_dataset_fraction_per_batch:.0%}-of-dataset cap": cap, "plan.max_batch_size": config.max_batch_size}
        binding = min(limits, key=limits.get)
        batch_reason = f"largest batch within {binding} (memory fits {fit}, dataset cap {cap}, max {config.max_batch_size}), at least {config.min_batch_size}"
    else:
        batch_reason = "set in the config"
    return {
        "patch_size": [int(v) for v in patch_size],
        "batch_size": batch,
        "spacing": [float(v) for v in spacing],
        "n_stages": len(topo["strides"]),
        "features_per_stage": features,
        "kernel_sizes": topo["kernel_sizes"],
        "strides": topo["strides"],
        "estimated_memory_gb": round(estimate, 2),
        "patch_reason": "set in the config" if forced_patch is not None else (
            f"median shape {[int(v) for v in np.round(median_shape)]} clipped from a large start patch, "
            f"shrunk {shrunk} step(s) to fit {config.gpu_memory_gb:g} GB, rounded up to the total stride {topo['divisible_by']}"),
        "batch_reason": batch_reason,
    }


def configurations(spacing: Sequence[float], shapes_at_target: np.ndarray, config: PlanConfig) -> dict[str, Any]:
    """The ``3d`` and ``2d`` network configurations (2D slices are taken across the coarsest axis)."""
    spacing = np.asarray(spacing, dtype=float)
    median_shape = np.median(shapes_at_target, axis=0)
    dataset_voxels = float(np.sum(np.prod(shapes_at_target, axis=1)))
    three_d = _configuration(spacing, median_shape, dataset_voxels, config.initial_patch_voxels_3d, config.max_features_3d,
                             config.patch_size_3d, config.batch_size_3d, config)
    coarse = np.flatnonzero(np.isclose(spacing, spacing.max()))
    slice_axis = int(coarse[-1]) if len(coarse) < 3 else 2
    plane = [a for a in range(3) if a != slice_axis]
    two_d = _configuration(spacing[plane], median_shape[plane], dataset_voxels, config.initial_patch_voxels_2d, config.max_features_2d,
                           config.patch_size_2d, config.batch_size_2d, config)
    two_d["slice_axis"] = slice_axis
    two_d["plane_axes"] = plane
    return {"3d": three_d, "2d": two_d}


# --- the plan ------------------------------------------------------------------------------------
def make_plan(description: DatasetDescription, fingerprint: dict[str, Any], config: PlanConfig | None = None) -> dict[str, Any]:
    """Derive the plan (a JSON-ready dict) from a dataset description and its fingerprint."""
    config = config or PlanConfig()
    cases = fingerprint["cases"]
    spacings = np.array([case["spacing"] for case in cases], dtype=float)
    shapes = np.array([case["shape_cropped"] for case in cases], dtype=float)
    spacing, spacing_reason = target_spacing(spacings, shapes, config)
    shapes_at_target = np.maximum(np.round(shapes * spacings / np.asarray(spacing)), 1)
    separate = "coarse axis resampled separately with order 0 when one axis is more than " f"{config.separate_axis_ratio:g}x coarser than the finest"
    preprocessing = {
        "orientation": "RAS",
        "crop": "bounding box of voxels nonzero in any channel or labelled",
        "target_spacing": spacing,
        "num_channels": description.num_channels,
        "labels": description.label_values,
        "normalization": normalization_schemes(description, fingerprint, config),
        "resampling": {
            "image_order": config.image_order,
            "label": config.label_resampling,
            "separate_axis_ratio": config.separate_axis_ratio,
            "out_of_plane_order": config.out_of_plane_order,
        },
        "class_locations_per_class": config.class_locations_per_class,
        "seed": config.seed,
    }
    plan: dict[str, Any] = {
        "plan_version": PLAN_VERSION,
        "medseg_version": __version__,
        "dataset": description.name,
        "dataset_format": description.format,
        "channels": [{"index": i, "name": n, "modality": m} for i, (n, m) in enumerate(zip(description.channel_names, description.modalities))],
        "labels": {str(k): v for k, v in sorted(description.labels.items())},
        "regions": {k: list(v) for k, v in description.regions.items()},
        "canonical_orientation": "RAS",
        "transpose": [0, 1, 2],
        "target_spacing": spacing,
        "target_spacing_reason": spacing_reason,
        "resampling_note": separate,
        "preprocessing": preprocessing,
        "gpu_memory_gb": config.gpu_memory_gb,
        "configurations": configurations(spacing, shapes_at_target, config),
        "fingerprint_summary": {
            "num_cases": fingerprint["num_cases"],
            "median_spacing": fingerprint["median_spacing"],
            "spacing_min": [float(v) for v in spacings.min(axis=0)],
            "spacing_max": [float(v) for v in spacings.max(axis=0)],
            "median_shape_cropped": fingerprint["median_shape_cropped"],
            "median_shape_at_target": [float(v) for v in np.median(shapes_at_target, axis=0)],
            "median_crop_fraction": fingerprint["median_crop_fraction"],
            "orientations": fingerprint.get("orientations", []),
            "intensity_foreground": [{k: v for k, v in stats.items()} for stats in fingerprint["intensity_foreground"]],
            "class_frequency": fingerprint["class_frequency"],
        },
        "config": config.model_dump(mode="json"),
    }
    plan["preprocessing_hash"] = preprocessing_hash(plan)
    return plan


def save_plan(plan: dict[str, Any], path: str | Path) -> Path:
    plan = dict(plan)
    plan["preprocessing_hash"] = preprocessing_hash(plan)
    return write_json(path, plan)


def load_plan(path: str | Path) -> dict[str, Any]:
    """Read a plan; a hand-edited plan is fine (its hash is recomputed from the content)."""
    plan = read_json(path)
    if not isinstance(plan, dict) or "preprocessing" not in plan:
        raise InputError(path, "not a medseg plan (no 'preprocessing' section); create one with `medseg plan DATASET`")
    if plan.get("plan_version") != PLAN_VERSION:
        raise InputError(path, f"plan version {plan.get('plan_version')} is not supported (expected {PLAN_VERSION}); re-run `medseg plan`")
    current = preprocessing_hash(plan)
    if plan.get("preprocessing_hash") != current:
        log.info("%s: preprocessing section was edited (hash %s -> %s)", path, plan.get("preprocessing_hash"), current)
        plan["preprocessing_hash"] = current
    return plan


def plan_dataset(root: str | Path, config: DataConfig | None = None, output: str | Path | None = None, *, workers: int = 2, progress: bool = True) -> dict[str, Any]:
    """Load, fingerprint (reusing ``fingerprint.json`` beside ``output`` when current) and plan a raw dataset.

    ``config`` is a :class:`medseg.data.config.DataConfig`; the plan is saved to ``output`` if given.
    """
    config = config or DataConfig()
    description = load_dataset(root)
    fingerprint_path = Path(output).parent / "fingerprint.json" if output else None
    fingerprint = load_or_compute_fingerprint(description, fingerprint_path, config.fingerprint, workers=workers, progress=progress)
    plan = make_plan(description, fingerprint, config.plan)
    if output:
        save_plan(plan, output)
    return plan

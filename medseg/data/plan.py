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
* **topology**: the one network-shape rule of :mod:`medseg.models.topology` (nnU-Net's): pool an axis
  (stride 2) while it stays >= 2x ``min_feature_map_size`` voxels and its spacing is within 2x of the
  finest pooled axis; a kernel is 3 along an axis once that axis's spacing is within 2x of the finest,
  else 1 (so thick-slice axes start with in-plane 1x3x3 convolutions). The patch is rounded up to a
  multiple of the total stride per axis. Each configuration stores the result, with the knobs it was
  derived with (:func:`~medseg.models.topology.planned_knobs`: the ``cpu_`` widths on a CPU plan), as
  its typed ``topology``; an override re-derives it from those knobs.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medseg import __version__
from medseg.data.config import FingerprintConfig, PlanConfig
from medseg.data.dataset import DatasetDescription, load_dataset, normalization_directive
from medseg.data.devices import device_profile
from medseg.data.fingerprint import load_or_compute_fingerprint
from medseg.errors import ConfigError, InputError
from medseg.models.topology import derive_topology, planned_knobs
from medseg.schema.plan import (ChannelNormalization, Configuration, DeviceProfile, Plan, Preprocessing, Resampling, ShapeKnobs, Topology,
                                read_plan, write_plan)

log = logging.getLogger(__name__)

#: Configuration names (nnU-Net's); ``3d`` names the plan's default 3D configuration for its device.
FULLRES, LOWRES, TWO_D = "3d_fullres", "3d_lowres", "2d"


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
def normalization_schemes(description: DatasetDescription, fingerprint: dict[str, Any], config: PlanConfig) -> list[ChannelNormalization]:
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
            entry["use_nonzero_mask"] = bool(use_mask or description.foreground_mask)
            entry["reason"] = f"{modality}: per-image z-score " + _zscore_region(use_mask, description.foreground_mask, crop_fraction, config)
        elif scheme == "rescale":
            entry["reason"] = "channel name asks for rescaling to [0, 1]"
        else:
            entry["reason"] = "channel name or config asks for no normalization"
        if index in config.normalization:
            entry["reason"] = f"set in the config (plan.normalization.{index}); " + entry["reason"]
        schemes.append(ChannelNormalization(**entry))
    return schemes


def _zscore_region(use_mask: bool, masked: bool, crop_fraction: float, config: PlanConfig) -> str:
    if masked:
        return "inside the foreground mask the images were masked with at import (dataset.json foreground_mask)"
    if use_mask:
        return f"inside the nonzero mask (cropping kept {crop_fraction:.0%} of voxels, < {config.nonzero_mask_crop_fraction:.0%})"
    return f"over the whole cropped image (cropping kept {crop_fraction:.0%} of voxels)"


# --- patch, batch and width ---------------------------------------------------------------------
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


@dataclass(frozen=True)
class Sizing:
    """How patch, batch and width are bounded on the planned device.

    GPU: stored activations of ``min_batch_size`` patches must fit in the memory budget. CPU: the
    voxels of one step (patch x batch) must stay within a compute budget, so a step takes about
    the same time on any dataset, and the network is narrower.
    """

    device: DeviceProfile
    memory_budget_bytes: float
    step_voxels: float
    knobs: ShapeKnobs

    @property
    def cpu(self) -> bool:
        return self.device.kind == "cpu"

    def describe(self) -> str:
        if self.cpu:
            return f"{self.step_voxels:,.0f} voxels per step on {self.device.cores} CPU core(s)"
        return f"{self.memory_budget_bytes / 1024**3:g} GB of GPU memory"


def sizing(device: DeviceProfile, config: PlanConfig, spatial_dims: int) -> Sizing:
    knobs = planned_knobs(config.model_dump(), device.kind == "cpu", spatial_dims)
    if device.kind == "cpu":
        step = config.cpu_step_voxels_per_core * device.cores * (3.0 if spatial_dims == 2 else 1.0)  # 2D convolutions: 9 taps, not 27
        return Sizing(device, math.inf, step, knobs)
    memory = device.memory_gb if config.gpu_memory_gb is not None else min(device.memory_gb, config.max_gpu_memory_gb)
    budget = (memory - config.memory_overhead_gb) * 1024**3
    if budget <= 0:
        raise ConfigError(f"a {memory:g} GB budget leaves nothing after the {config.memory_overhead_gb} GB overhead (plan.memory_overhead_gb)")
    return Sizing(device, budget, math.inf, knobs)


def _how_many(budget: float, each: float) -> float:
    """Whole items of size ``each`` in ``budget`` (an unbounded budget holds any number)."""
    return math.inf if math.isinf(budget) else budget // max(each, 1.0)


def _fits(per_sample: float, patch_voxels: float, batch: int, sizing_: Sizing) -> bool:
    return per_sample * batch <= sizing_.memory_budget_bytes and patch_voxels * batch <= sizing_.step_voxels


def _shrink_patch(spacing: np.ndarray, median_shape: np.ndarray, patch: np.ndarray, forced: bool, sizing_: Sizing, config: PlanConfig) -> tuple[Topology, float, int]:
    """Shrink the axis largest relative to the median shape until ``min_batch_size`` patches fit the budget."""
    shrunk = 0
    while True:
        topo = derive_topology(spacing, patch, sizing_.knobs)
        per_sample = activation_bytes_per_sample(topo.patch_size, topo.strides, topo.features_per_stage, config)
        if forced or _fits(per_sample, float(np.prod(topo.patch_size)), config.min_batch_size, sizing_):
            return topo, per_sample, shrunk
        ratio = np.asarray(topo.patch_size) / median_shape
        candidates = [a for a in range(len(patch)) if patch[a] - topo.divisor[a] >= sizing_.knobs.min_feature_map_size]
        if not candidates:
            log.warning("even the smallest patch exceeds the budget (%s); keeping %s", sizing_.describe(), list(patch))
            return topo, per_sample, shrunk
        axis = int(np.argmax(ratio)) if int(np.argmax(ratio)) in candidates else max(candidates, key=lambda a: ratio[a])
        patch[axis] -= topo.divisor[axis]
        shrunk += 1


def _configuration(
    spacing: np.ndarray,
    median_shape: np.ndarray,
    dataset_voxels: float,
    initial_voxels: float,
    forced_patch: list[int] | None,
    forced_batch: int | None,
    config: PlanConfig,
    sizing_: Sizing,
    slice_axis: int | None = None,
) -> Configuration:
    if forced_patch is not None:
        patch = np.asarray(forced_patch, dtype=float)
    else:
        aspect = 1.0 / spacing
        patch = aspect * (initial_voxels / np.prod(aspect)) ** (1.0 / len(spacing))
        patch = np.minimum(np.round(patch), median_shape)
    patch = np.maximum(np.round(patch), 1).astype(int)
    topo, per_sample, shrunk = _shrink_patch(spacing, median_shape, patch, forced_patch is not None, sizing_, config)
    patch_size = topo.patch_size
    patch_voxels = float(np.prod(patch_size))
    fit = int(min(_how_many(sizing_.memory_budget_bytes, per_sample), _how_many(sizing_.step_voxels, patch_voxels)))
    cap = int(config.max_dataset_fraction_per_batch * dataset_voxels / patch_voxels)
    batch = forced_batch or int(max(config.min_batch_size, min(fit, cap, config.max_batch_size)))
    fit = min(fit, 10**9)
    estimate = (per_sample * batch) / 1024**3 + config.memory_overhead_gb
    if not sizing_.cpu and estimate > sizing_.memory_budget_bytes / 1024**3 + config.memory_overhead_gb:
        log.warning("patch %s x batch %d is estimated at %.1f GB, above the budget (%s)", list(patch_size), batch, estimate, sizing_.describe())
    if forced_batch is None:
        limits = {sizing_.describe(): fit, f"the {config.max_dataset_fraction_per_batch:.0%}-of-dataset cap": cap, "plan.max_batch_size": config.max_batch_size}
        binding = min(limits, key=limits.get)
        batch_reason = f"largest batch within {binding} (budget fits {fit}, dataset cap {cap}, max {config.max_batch_size}), at least {config.min_batch_size}"
    else:
        batch_reason = "set in the config"
    width = f"; {topo.features_per_stage[0]} base features capped at {sizing_.knobs.max_features} ({'CPU: narrower network, more steps per minute' if sizing_.cpu else 'nnU-Net'})"
    return Configuration(
        patch_size=[int(v) for v in patch_size],
        batch_size=batch,
        spacing=[float(v) for v in spacing],
        topology=topo,
        estimated_memory_gb=round(estimate, 2),
        patch_reason="set in the config" if forced_patch is not None else (
            f"median shape {[int(v) for v in np.round(median_shape)]} clipped from a large start patch, "
            f"shrunk {shrunk} step(s) to fit {sizing_.describe()}, rounded up to the total stride {topo.divisor}{width}"),
        batch_reason=batch_reason,
        slice_axis=slice_axis,
    )


def _three_d(spacing: np.ndarray, median_shape: np.ndarray, dataset_voxels: float, config: PlanConfig, sizing_: Sizing) -> Configuration:
    return _configuration(spacing, median_shape, dataset_voxels, config.initial_patch_voxels_3d, config.patch_size_3d, config.batch_size_3d, config, sizing_)


def lowres_configuration(spacing: np.ndarray, median_shape: np.ndarray, dataset_voxels: float, fullres: Configuration,
                         config: PlanConfig, sizing_: Sizing) -> Configuration | None:
    """nnU-Net's 3d_lowres: coarsen the grid (the finer axes first, 3% a step) until the patch covers
    ``lowres_patch_fraction`` (``cpu_lowres_patch_fraction`` on a CPU) of the median case; None when the full-resolution patch already does."""
    median_voxels = float(np.prod(median_shape))
    forced = config.patch_size_3d is not None or config.target_spacing is not None  # the user chose the grid or the patch
    fraction = config.cpu_lowres_patch_fraction if sizing_.cpu else config.lowres_patch_fraction
    if forced or np.prod(fullres.patch_size) >= fraction * median_voxels:
        return None
    low = np.array(spacing, dtype=float)
    chosen = fullres
    for _ in range(200):
        coarse = low.max()
        low = np.where(coarse / low > 2, low * 1.03, low) if np.any(coarse / low > 2) else low * 1.03
        shape = median_shape * spacing / low
        chosen = _three_d(low, shape, dataset_voxels * float(np.prod(spacing / low)), config, sizing_)
        if np.prod(chosen.patch_size) >= fraction * float(np.prod(shape)):
            break
    chosen.spacing_reason = (f"the 3d_fullres patch covers {np.prod(fullres.patch_size) / median_voxels:.0%} of the median case "
                             f"(< {fraction:.0%}{', the CPU share' if sizing_.cpu else ''}): grid coarsened to {[round(float(v), 3) for v in low]} mm until its patch covers "
                             f"{np.prod(chosen.patch_size) / float(np.prod(median_shape * spacing / low)):.0%} (nnU-Net's 3d_lowres)")
    chosen.target_spacing = [float(v) for v in low]
    return chosen


def configurations(spacing: Sequence[float], shapes_at_target: np.ndarray, config: PlanConfig, device: DeviceProfile | None = None) -> dict[str, Configuration]:
    """``3d_fullres``, ``3d_lowres`` (large cases only) and ``2d`` (slices across the coarsest axis)."""
    device = device or device_profile(config)
    spacing = np.asarray(spacing, dtype=float)
    median_shape = np.median(shapes_at_target, axis=0)
    dataset_voxels = float(np.sum(np.prod(shapes_at_target, axis=1)))
    fullres = _three_d(spacing, median_shape, dataset_voxels, config, sizing(device, config, 3))
    fullres.target_spacing = [float(v) for v in spacing]
    result = {FULLRES: fullres}
    lowres = lowres_configuration(spacing, median_shape, dataset_voxels, fullres, config, sizing(device, config, 3))
    if lowres is not None:
        result[LOWRES] = lowres
    coarse = np.flatnonzero(np.isclose(spacing, spacing.max()))
    slice_axis = int(coarse[-1]) if len(coarse) < 3 else 2
    plane = [a for a in range(3) if a != slice_axis]
    two_d = _configuration(spacing[plane], median_shape[plane], dataset_voxels, config.initial_patch_voxels_2d,
                           config.patch_size_2d, config.batch_size_2d, config, sizing(device, config, 2), slice_axis)
    two_d.target_spacing = [float(v) for v in spacing]
    result[TWO_D] = two_d
    return result


def default_3d(configurations_: dict[str, Configuration], device: DeviceProfile) -> tuple[str, str]:
    """Which configuration ``3d`` names, and why: on a CPU the coarse grid when there is one."""
    if device.kind == "cpu" and LOWRES in configurations_:
        return LOWRES, "CPU plan: 3d_lowres trains many more steps per minute on context the full-resolution patch cannot see, and infers a CT in seconds"
    return FULLRES, "full resolution" + (" (GPU plan)" if device.kind == "cuda" else " (the CPU patch covers enough of each case)")


# --- the plan ------------------------------------------------------------------------------------
def _preprocessing(description: DatasetDescription, fingerprint: dict[str, Any], spacing: list[float], config: PlanConfig) -> Preprocessing:
    return Preprocessing(
        target_spacing=spacing,
        num_channels=description.num_channels,
        labels=description.label_values,
        normalization=normalization_schemes(description, fingerprint, config),
        resampling=Resampling(image_order=config.image_order, label=config.label_resampling,
                              separate_axis_ratio=config.separate_axis_ratio, out_of_plane_order=config.out_of_plane_order),
        class_locations_per_class=config.class_locations_per_class,
        seed=config.seed,
        ignore_label=description.ignore_label,
    )


def make_plan(description: DatasetDescription, fingerprint: dict[str, Any], config: PlanConfig | None = None, device: DeviceProfile | None = None) -> Plan:
    """Derive the plan from a dataset description and its fingerprint, for ``device`` (default: ``config.device``)."""
    config = config or PlanConfig()
    device = device or device_profile(config)
    cases = fingerprint["cases"]
    spacings = np.array([case["spacing"] for case in cases], dtype=float)
    shapes = np.array([case["shape_cropped"] for case in cases], dtype=float)
    spacing, spacing_reason = target_spacing(spacings, shapes, config)
    shapes_at_target = np.maximum(np.round(shapes * spacings / np.asarray(spacing)), 1)
    planned = configurations(spacing, shapes_at_target, config, device)
    alias, alias_reason = default_3d(planned, device)
    return Plan(
        medseg_version=__version__,
        dataset=description.name,
        dataset_format=description.format,
        channels=[{"index": i, "name": n, "modality": m} for i, (n, m) in enumerate(zip(description.channel_names, description.modalities))],
        labels=dict(sorted(description.labels.items())),
        regions={k: list(v) for k, v in description.regions.items()},
        regions_class_order=description.regions_class_order,
        case_folder={"channels": description.channel_patterns, "mask": description.mask_pattern} if description.channel_patterns else None,
        target_spacing=spacing,
        target_spacing_reason=spacing_reason,
        resampling_note=f"coarse axis resampled separately with order 0 when one axis is more than {config.separate_axis_ratio:g}x coarser than the finest",
        preprocessing=_preprocessing(description, fingerprint, spacing, config),
        planned_for=device,
        configurations=planned,
        aliases={"3d": alias},
        alias_reasons={"3d": alias_reason},
        fingerprint_summary={
            "num_cases": fingerprint["num_cases"],
            "median_spacing": fingerprint["median_spacing"],
            "spacing_min": [float(v) for v in spacings.min(axis=0)],
            "spacing_max": [float(v) for v in spacings.max(axis=0)],
            "median_shape_cropped": fingerprint["median_shape_cropped"],
            "median_shape_at_target": [float(v) for v in np.median(shapes_at_target, axis=0)],
            "median_crop_fraction": fingerprint["median_crop_fraction"],
            "orientations": fingerprint.get("orientations", []),
            "intensity_foreground": [dict(stats) for stats in fingerprint["intensity_foreground"]],
            "class_frequency": fingerprint["class_frequency"],
        },
        config=config.model_dump(mode="json"),
    )


def save_plan(plan: Plan, path: str | Path) -> Path:
    return write_plan(plan, path)


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan; a hand-edited plan is fine (its identity is recomputed from the content)."""
    return read_plan(path)


def plan_dataset(root: str | Path, config: Any = None, output: str | Path | None = None, *, workers: int = 2, progress: bool = True) -> Plan:
    """Load, fingerprint (reusing ``fingerprint.json`` beside ``output`` when current) and plan a raw dataset.

    ``config`` is a :class:`~medseg.config.schema.RunConfig` (its ``fingerprint`` and ``plan``
    sections are read); the plan is saved to ``output`` if given.
    """
    fingerprint_config: FingerprintConfig = config.fingerprint if config is not None else FingerprintConfig()
    plan_config: PlanConfig = config.plan if config is not None else PlanConfig()
    description = load_dataset(root)
    fingerprint_path = Path(output).parent / "fingerprint.json" if output else None
    fingerprint = load_or_compute_fingerprint(description, fingerprint_path, fingerprint_config, workers=workers, progress=progress)
    plan = make_plan(description, fingerprint, plan_config)
    if output:
        save_plan(plan, output)
    return plan

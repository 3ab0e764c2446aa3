"""Network topology from the plan: per-stage kernel sizes, strides and widths.

This module defines the **plan configuration schema** that the planner writes and every model reads.
One configuration (e.g. ``plan["configurations"]["3d_fullres"]``) is a dict with these keys, all in
the *array axis order* of the preprocessed volumes, i.e. the order of the tensor's spatial dims
``(B, C, *patch_size)``:

``patch_size``   list[int], required unless ``kernel_sizes``/``strides`` are given. Training patch.
``spacing``      list[float] in mm, optional (default isotropic 1 mm). Target spacing of the cache;
                 only used to derive kernels and strides when those are absent.
``kernel_sizes`` list (one per stage) of per-axis conv kernel sizes, e.g. ``[[3, 3, 1], [3, 3, 3]]``.
``strides``      list (one per stage) of per-axis strides; the first stage is all ones (full
                 resolution), each later one is the downsampling into that stage.
``features``     list[int] (one per stage), optional: output channels of each stage (the planner's
                 name ``features_per_stage`` is read too). Used unless
                 the model config sets ``base_features`` or ``max_features``; otherwise widths
                 follow nnU-Net: ``base_features * 2**stage`` (32 by default) capped at
                 ``max_features`` (320 in 3D, 512 in 2D).

A *stage* is one encoder resolution level; the last one is the bottleneck. Keys not listed here
(normalization statistics, batch size...) are ignored by the models. :func:`plan_topology` fills
the four network keys from spacing and patch size, for the planner to store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from medseg.errors import ConfigError

#: nnU-Net caps feature maps at 320 in 3D and 512 in 2D to bound memory.
DEFAULT_MAX_FEATURES = {2: 512, 3: 320}
#: Downsampling steps when nothing (no patch, no strides) describes the input.
FALLBACK_DEPTH = 4


@dataclass(frozen=True)
class Topology:
    """Everything an encoder-decoder needs to lay out its stages."""

    spatial_dims: int
    kernel_sizes: list[list[int]]
    strides: list[list[int]]
    features: list[int]
    patch_size: list[int] | None = None
    spacing: list[float] | None = None

    @property
    def n_stages(self) -> int:
        return len(self.strides)

    @property
    def divisor(self) -> list[int]:
        """Per-axis factor every input size must be a multiple of (product of all strides)."""
        return [math.prod(stride[axis] for stride in self.strides) for axis in range(self.spatial_dims)]


def derive_kernels_and_strides(
    spacing: Sequence[float],
    patch_size: Sequence[int],
    max_depth: int | None,
    min_feature_size: int = 4,
) -> tuple[list[list[int]], list[list[int]]]:
    """nnU-Net's rule (v2 ``get_pool_and_conv_props``) for where to pool and which kernels to use.

    Returns ``(kernel_sizes, strides)``, one entry per stage; ``strides[0]`` is all ones. At each
    step an axis is pooled (stride 2) only if its feature map stays >= ``min_feature_size`` and
    its current spacing is within 2x of the finest pooled-candidate axis, so coarse axes (e.g. 5 mm
    slices next to 0.8 mm pixels) are not pooled until the others have caught up. A single axis
    is pooled alone only while it is >= 3 * ``min_feature_size``. A kernel becomes 3 along an axis
    once that axis' spacing is within 2x of the finest one (and stays 3); before that it is 1, so
    the network does not mix thick slices at full resolution. The bottleneck kernel is always 3.
    ``max_depth`` caps the number of downsampling steps (stages - 1); None = no cap (nnU-Net v2).
    """
    if len(spacing) != len(patch_size) or len(spacing) not in (2, 3):
        raise ConfigError(f"spacing {list(spacing)} and patch_size {list(patch_size)} must both have 2 or 3 axes")
    if any(s <= 0 for s in spacing) or any(p < 1 for p in patch_size):
        raise ConfigError(f"spacing {list(spacing)} and patch_size {list(patch_size)} must be positive")
    dims = len(spacing)
    current_spacing = [float(s) for s in spacing]
    current_size = [int(p) for p in patch_size]
    kernel = [1] * dims
    kernel_sizes: list[list[int]] = []
    strides: list[list[int]] = [[1] * dims]
    while max_depth is None or len(strides) - 1 < max_depth:
        poolable = [axis for axis in range(dims) if current_size[axis] >= 2 * min_feature_size]
        if not poolable:
            break
        finest = min(current_spacing[axis] for axis in poolable)
        poolable = [axis for axis in poolable if current_spacing[axis] / finest < 2]
        if len(poolable) == 1 and current_size[poolable[0]] < 3 * min_feature_size:
            break
        finest_overall = min(current_spacing)
        kernel = [3 if kernel[axis] == 3 or current_spacing[axis] / finest_overall < 2 else 1 for axis in range(dims)]
        kernel_sizes.append(list(kernel))
        stride = [2 if axis in poolable else 1 for axis in range(dims)]
        for axis in poolable:
            current_spacing[axis] *= 2
            current_size[axis] = math.ceil(current_size[axis] / 2)
        strides.append(stride)
    kernel_sizes.append([3] * dims)
    return kernel_sizes, strides


def pad_to_divisible(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[int]:
    """Smallest patch size >= ``patch_size`` that every stage can halve without remainders."""
    divisor = [math.prod(stride[axis] for stride in strides) for axis in range(len(patch_size))]
    return [math.ceil(size / d) * d for size, d in zip(patch_size, divisor)]


def default_features(
    n_stages: int, spatial_dims: int, base_features: int = 32, max_features: int | None = None
) -> list[int]:
    """nnU-Net widths: double per stage from ``base_features``, capped (320 in 3D, 512 in 2D by default)."""
    cap = max_features if max_features is not None else DEFAULT_MAX_FEATURES[spatial_dims]
    return [min(base_features * 2**stage, cap) for stage in range(n_stages)]


def plan_topology(
    spacing: Sequence[float],
    patch_size: Sequence[int],
    max_depth: int | None = None,
    min_feature_size: int = 4,
    base_features: int = 32,
    max_features: int | None = None,
) -> dict[str, Any]:
    """The network keys of a plan configuration (see the module docstring), for the planner to store.

    ``patch_size`` comes back padded up to a multiple of the total stride per axis.
    """
    kernel_sizes, strides = derive_kernels_and_strides(spacing, patch_size, max_depth, min_feature_size)
    return {
        "patch_size": pad_to_divisible(patch_size, strides),
        "spacing": [float(s) for s in spacing],
        "kernel_sizes": kernel_sizes,
        "strides": strides,
        "features": default_features(len(strides), len(spacing), base_features, max_features),
    }


def _int_lists(value: Any, key: str, dims: int) -> list[list[int]]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"plan configuration: '{key}' must be a non-empty list of per-stage lists")
    result = []
    for stage, item in enumerate(value):
        if isinstance(item, int):
            item = [item] * dims
        valid = isinstance(item, (list, tuple)) and len(item) == dims
        if not valid or not all(isinstance(v, int) and v >= 1 for v in item):
            raise ConfigError(f"plan configuration: '{key}'[{stage}] = {item!r} must be {dims} positive integers")
        result.append([int(v) for v in item])
    return result


def resolve_topology(
    plan_configuration: dict[str, Any] | None,
    *,
    spatial_dims: int = 3,
    max_depth: int | None = None,
    min_feature_size: int = 4,
    base_features: int | None = None,
    max_features: int | None = None,
) -> Topology:
    """Read the plan configuration, filling what is missing by the nnU-Net rules.

    Precedence: explicit ``kernel_sizes``/``strides`` > derived from ``patch_size`` (+ ``spacing``)
    > without any plan, ``max_depth`` (default :data:`FALLBACK_DEPTH`) isotropic 2x downsamplings
    with 3-kernels in ``spatial_dims`` dimensions. Widths: the plan's ``features`` when neither
    ``base_features`` nor ``max_features`` is given, else nnU-Net's doubling rule. A given
    ``patch_size`` must be divisible by the total stride.
    """
    plan = dict(plan_configuration or {})
    patch = plan.get("patch_size")
    spacing = plan.get("spacing")
    if patch is not None:
        if not isinstance(patch, (list, tuple)) or len(patch) not in (2, 3):
            raise ConfigError(f"plan configuration: patch_size {patch!r} must list 2 or 3 sizes")
        patch = [int(p) for p in patch]
        spatial_dims = len(patch)
    if spacing is not None:
        spacing = [float(s) for s in spacing]
        if patch is not None and len(spacing) != len(patch):
            raise ConfigError(f"plan configuration: spacing {spacing} and patch_size {patch} differ in length")
        spatial_dims = len(spacing)

    if "kernel_sizes" in plan or "strides" in plan:
        if "kernel_sizes" not in plan or "strides" not in plan:
            raise ConfigError("plan configuration: give both 'kernel_sizes' and 'strides', or neither")
        first = plan["strides"][0] if plan["strides"] else None
        if patch is None and spacing is None and isinstance(first, (list, tuple)):
            spatial_dims = len(first)
        kernel_sizes = _int_lists(plan["kernel_sizes"], "kernel_sizes", spatial_dims)
        strides = _int_lists(plan["strides"], "strides", spatial_dims)
        if len(kernel_sizes) != len(strides):
            raise ConfigError(
                f"plan configuration: {len(kernel_sizes)} kernel_sizes but {len(strides)} strides (one each per stage)"
            )
    elif patch is not None:
        kernel_sizes, strides = derive_kernels_and_strides(
            spacing or [1.0] * spatial_dims, patch, max_depth, min_feature_size
        )
    else:
        depth = FALLBACK_DEPTH if max_depth is None else max_depth
        kernel_sizes = [[3] * spatial_dims for _ in range(depth + 1)]
        strides = [[1] * spatial_dims] + [[2] * spatial_dims for _ in range(depth)]

    if len(strides) < 2:
        raise ConfigError(f"plan configuration: the network needs at least 2 stages, got strides {strides}")
    features = plan.get("features", plan.get("features_per_stage"))
    if "features" in plan and "features_per_stage" in plan and plan["features"] != plan["features_per_stage"]:
        raise ConfigError("plan configuration: 'features' and 'features_per_stage' disagree; keep one")
    if features is None or base_features is not None or max_features is not None:
        features = default_features(len(strides), spatial_dims, base_features or 32, max_features)
    elif len(features) != len(strides) or not all(isinstance(f, int) and f >= 1 for f in features):
        raise ConfigError(f"plan configuration: features {features!r} must be {len(strides)} positive integers")
    topology = Topology(spatial_dims, kernel_sizes, strides, [int(f) for f in features], patch, spacing)
    if patch is not None:
        bad = [size for size, d in zip(patch, topology.divisor) if size % d]
        if bad:
            raise ConfigError(
                f"plan configuration: patch_size {patch} is not divisible by the total stride {topology.divisor}; "
                f"use {pad_to_divisible(patch, strides)}"
            )
    return topology

"""The network-shape rule: per-stage kernels, strides and widths from spacing, patch and the knobs.

This module is the one place a network's shape is derived. The planner (:mod:`medseg.data.plan`)
sizes its patches with :func:`derive_topology`; each plan configuration stores the result as a typed
:class:`~medseg.schema.plan.Topology` (nnU-Net's ``arch_kwargs``) with the :class:`ShapeKnobs` it was
derived with; an override (``train.patch_size``, a ``model.*`` knob) re-derives it here, by the same
rule, from the configuration's own knobs (:func:`reshape`); and the model builders take the result
unchanged (:func:`resolve_topology`, called by :func:`medseg.models.registry.build_model`).

The knobs have one set of names, in ``plan.*`` (the planner picks them per device:
``cpu_base_features``...) and in ``model.*`` (overrides, None = the plan's):

``base_features``         channels of the full-resolution stage, doubling per stage (nnU-Net: 32);
``max_features``          cap on channels per stage (nnU-Net: 320 in 3D, 512 in 2D);
``max_pooling_steps``     most down-sampling steps (stages - 1);
``min_feature_map_size``  an axis is pooled only while its feature map stays at least this large.

Everything is in the *array axis order* of the preprocessed volumes, the order of the tensor's
spatial dims ``(B, C, *patch_size)``. Older inputs still build: a plan or checkpoint without knobs
(formats 1-2; :func:`stored_topology`) keeps its stored layout, and a shape missing altogether (or the
old dict form ``{"patch_size", "spacing", "kernel_sizes", "strides", "features"}``) is derived with
nnU-Net's defaults and the ``model.*`` overrides, as medseg <= 0.2 built it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from medseg.errors import ConfigError
from medseg.schema.plan import DEPTH_KNOBS, Configuration, ShapeKnobs, Topology

__all__ = ["DEFAULT_MAX_FEATURES", "FALLBACK_DEPTH", "ShapeKnobs", "Topology", "derive_kernels_and_strides", "derive_topology",
           "pad_to_divisible", "planned_knobs", "reshape", "resolve_topology", "stage_widths", "stored_topology"]

#: nnU-Net caps feature maps at 320 in 3D and 512 in 2D to bound memory.
DEFAULT_MAX_FEATURES = {2: 512, 3: 320}
#: Downsampling steps when nothing (no patch, no strides) describes the input.
FALLBACK_DEPTH = 4


def derive_kernels_and_strides(
    spacing: Sequence[float],
    patch_size: Sequence[int],
    max_pooling_steps: int | None,
    min_feature_map_size: int = 4,
) -> tuple[list[list[int]], list[list[int]]]:
    """nnU-Net's rule (v2 ``get_pool_and_conv_props``) for where to pool and which kernels to use.

    Returns ``(kernel_sizes, strides)``, one entry per stage; ``strides[0]`` is all ones. At each
    step an axis is pooled (stride 2) only if its feature map stays >= ``min_feature_map_size`` and
    its current spacing is within 2x of the finest pooled-candidate axis, so coarse axes (e.g. 5 mm
    slices next to 0.8 mm pixels) are not pooled until the others have caught up. A single axis
    is pooled alone only while it is >= 3 * ``min_feature_map_size``. A kernel becomes 3 along an axis
    once that axis' spacing is within 2x of the finest one (and stays 3); before that it is 1, so
    the network does not mix thick slices at full resolution. The bottleneck kernel is always 3.
    ``max_pooling_steps`` caps the number of downsampling steps (stages - 1); None = no cap.
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
    while max_pooling_steps is None or len(strides) - 1 < max_pooling_steps:
        poolable = [axis for axis in range(dims) if current_size[axis] >= 2 * min_feature_map_size]
        if not poolable:
            break
        finest = min(current_spacing[axis] for axis in poolable)
        poolable = [axis for axis in poolable if current_spacing[axis] / finest < 2]
        if len(poolable) == 1 and current_size[poolable[0]] < 3 * min_feature_map_size:
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


def stage_widths(n_stages: int, spatial_dims: int, knobs: ShapeKnobs) -> list[int]:
    """nnU-Net widths: ``base_features`` doubling per stage, capped at ``max_features`` (320 in 3D, 512 in 2D by default)."""
    cap = knobs.max_features if knobs.max_features is not None else DEFAULT_MAX_FEATURES[spatial_dims]
    return [min(knobs.base_features * 2**stage, cap) for stage in range(n_stages)]


def derive_topology(spacing: Sequence[float], patch_size: Sequence[int], knobs: ShapeKnobs) -> Topology:
    """The network shape for ``patch_size`` at ``spacing`` with ``knobs``; its ``patch_size`` is the patch rounded
    up to a multiple of the total stride per axis."""
    kernel_sizes, strides = derive_kernels_and_strides(spacing, patch_size, knobs.max_pooling_steps, knobs.min_feature_map_size)
    return Topology(kernel_sizes=kernel_sizes, strides=strides, features_per_stage=stage_widths(len(strides), len(spacing), knobs),
                    knobs=knobs, patch_size=pad_to_divisible(patch_size, strides), spacing=[float(s) for s in spacing])


def planned_knobs(settings: Mapping[str, Any], cpu: bool, spatial_dims: int, features: Sequence[int] | None = None) -> ShapeKnobs:
    """The planner's knobs from ``plan.*`` ``settings`` (PlanConfig's names): the ``cpu_`` widths on a CPU plan and the
    caps of ``spatial_dims``. A setting the mapping lacks comes from the stored ``features`` if given, else nnU-Net's default."""
    prefix = "cpu_" if cpu else ""
    inferred = {"base_features": features[0], "max_features": max(features)} if features else {}
    values = {
        "base_features": settings.get(f"{prefix}base_features", inferred.get("base_features")),
        "max_features": settings.get(f"{prefix}max_features_{spatial_dims}d", inferred.get("max_features")),
        "max_pooling_steps": settings.get("max_pooling_steps"),
        "min_feature_map_size": settings.get("min_feature_map_size"),
    }
    return ShapeKnobs(**{key: value for key, value in values.items() if value is not None})


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


def _patch_and_spacing(plan: Mapping[str, Any], spatial_dims: int) -> tuple[list[int] | None, list[float] | None, int]:
    patch, spacing = plan.get("patch_size"), plan.get("spacing")
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
    return patch, spacing, spatial_dims


def _stored_features(plan: Mapping[str, Any], n_stages: int) -> list[int] | None:
    features = plan.get("features", plan.get("features_per_stage"))
    if plan.get("features") is not None and plan.get("features_per_stage") is not None and plan["features"] != plan["features_per_stage"]:
        raise ConfigError("plan configuration: 'features' and 'features_per_stage' disagree; keep one")
    if features is not None and (len(features) != n_stages or not all(isinstance(f, int) and f >= 1 for f in features)):
        raise ConfigError(f"plan configuration: features {features!r} must be {n_stages} positive integers")
    return None if features is None else [int(f) for f in features]


def stored_topology(plan: Mapping[str, Any], spatial_dims: int = 3, overrides: Mapping[str, int] | None = None) -> Topology | None:
    """The layout a configuration of plan format 1-2 (or the old dict form) stored, without knobs; None when it stored
    none. Kernels and strides without widths get nnU-Net's; widths without kernels get the rule's kernels and strides
    (with the ``model.*`` depth ``overrides``, as medseg <= 0.2 did)."""
    patch, spacing, dims = _patch_and_spacing(plan, spatial_dims)
    kernels, strides = plan.get("kernel_sizes"), plan.get("strides")
    if kernels is None and strides is None:
        features = plan.get("features", plan.get("features_per_stage"))
        if features is None or patch is None:
            return None
        knobs = ShapeKnobs(**{key: value for key, value in (overrides or {}).items() if key in DEPTH_KNOBS})
        kernels, strides = derive_kernels_and_strides(spacing or [1.0] * dims, patch, knobs.max_pooling_steps, knobs.min_feature_map_size)
    elif kernels is None or strides is None:
        raise ConfigError("plan configuration: give both 'kernel_sizes' and 'strides', or neither")
    if patch is None and spacing is None and isinstance(strides[0] if strides else None, (list, tuple)):
        dims = len(strides[0])
    kernels, strides = _int_lists(kernels, "kernel_sizes", dims), _int_lists(strides, "strides", dims)
    if len(kernels) != len(strides):
        raise ConfigError(f"plan configuration: {len(kernels)} kernel_sizes but {len(strides)} strides (one each per stage)")
    features = _stored_features(plan, len(strides)) or stage_widths(len(strides), dims, ShapeKnobs())
    return Topology(kernel_sizes=kernels, strides=strides, features_per_stage=features, patch_size=patch, spacing=spacing)


def _fallback(spatial_dims: int, knobs: ShapeKnobs) -> Topology:
    """Without any patch: ``max_pooling_steps`` (default :data:`FALLBACK_DEPTH`) isotropic 2x down-samplings, 3-kernels."""
    depth = FALLBACK_DEPTH if knobs.max_pooling_steps is None else knobs.max_pooling_steps
    return Topology(kernel_sizes=[[3] * spatial_dims for _ in range(depth + 1)],
                    strides=[[1] * spatial_dims] + [[2] * spatial_dims for _ in range(depth)],
                    features_per_stage=stage_widths(depth + 1, spatial_dims, knobs), knobs=knobs)


def _check_divisible(topology: Topology, patch: Sequence[int] | None) -> Topology:
    if patch is not None and any(size % d for size, d in zip(patch, topology.divisor)):
        raise ConfigError(f"plan configuration: patch_size {list(patch)} is not divisible by the total stride {topology.divisor}; "
                          f"use {pad_to_divisible(patch, topology.strides)}")
    return topology


def _derived(spacing: Sequence[float] | None, patch: Sequence[int], knobs: ShapeKnobs) -> Topology:
    """:func:`derive_topology` for a patch that must already fit (a given patch is never silently enlarged)."""
    topology = derive_topology(spacing or [1.0] * len(patch), patch, knobs)
    _check_divisible(topology, patch)
    topology.spacing = None if spacing is None else [float(s) for s in spacing]
    return topology


def reshape(topology: Topology | None, spacing: Sequence[float] | None, patch: Sequence[int] | None,
            overrides: Mapping[str, int | None], spatial_dims: int = 3) -> Topology:
    """``topology`` for ``patch`` with the knob ``overrides`` (None values: not overridden), re-derived by the one rule
    from its own knobs where the patch or a knob changes (a width knob alone changes only the widths); unchanged otherwise.

    Without knobs (a plan or checkpoint of format 1-2 outside its plan) the stored layout is used as then: only
    ``base_features``/``max_features`` re-derive the widths (from nnU-Net's defaults); without any ``topology`` the
    shape is derived with nnU-Net's defaults and the overrides.
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    patch = None if patch is None else [int(p) for p in patch]
    if topology is None:
        knobs = ShapeKnobs(**overrides)
        return _derived(spacing, patch, knobs) if patch is not None else _fallback(spatial_dims, knobs)
    if topology.knobs is None:
        if patch is not None and topology.patch_size is not None and patch != topology.patch_size:
            return reshape(None, spacing, patch, overrides, spatial_dims)  # as medseg <= 0.2: a new patch, a new layout
        widths = {key: overrides[key] for key in ("base_features", "max_features") if key in overrides}
        if widths:
            topology = topology.model_copy(update={"features_per_stage": stage_widths(topology.n_stages, topology.spatial_dims, ShapeKnobs(**widths))})
        return _check_divisible(topology, patch or topology.patch_size)
    knobs = topology.knobs.model_copy(update=overrides)
    patch = patch if patch is not None else topology.patch_size
    if patch != topology.patch_size or any(getattr(knobs, key) != getattr(topology.knobs, key) for key in DEPTH_KNOBS):
        return _derived(spacing if spacing is not None else topology.spacing, patch, knobs) if patch is not None \
            else _fallback(topology.spatial_dims, knobs)
    if knobs != topology.knobs:
        widths = stage_widths(topology.n_stages, topology.spatial_dims, knobs)
        return _check_divisible(topology.model_copy(update={"features_per_stage": widths, "knobs": knobs}), patch)
    return _check_divisible(topology, patch)


def resolve_topology(source: Configuration | Topology | Mapping[str, Any] | None, *, spatial_dims: int = 3, **overrides: int | None) -> Topology:
    """The shape a model builder gets: a configuration's (or a topology's) own, through :func:`reshape` with the
    ``model.*`` knob ``overrides``; the old dict form is read by :func:`stored_topology`; nothing at all gives
    :data:`FALLBACK_DEPTH` isotropic down-samplings in ``spatial_dims`` dimensions."""
    if isinstance(source, Configuration):
        topology, patch, spacing = source.topology, source.patch_size, source.spacing
    elif isinstance(source, Topology):
        topology, patch, spacing = source, source.patch_size, source.spacing
    elif source is None:
        topology = patch = spacing = None
    else:
        patch, spacing, spatial_dims = _patch_and_spacing(source, spatial_dims)
        topology = stored_topology(source, spatial_dims, {key: value for key, value in overrides.items() if value is not None})
    result = reshape(topology, spacing, patch, overrides, len(patch) if patch is not None else spatial_dims)
    if result.n_stages < 2:
        raise ConfigError(f"plan configuration: the network needs at least 2 stages, got strides {result.strides}")
    return result

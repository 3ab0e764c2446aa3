"""nnU-Net pooling/kernel rules, reasoned out by hand for each case."""

from __future__ import annotations

import pytest

from medseg.errors import ConfigError
from medseg.models import ShapeKnobs, derive_kernels_and_strides, derive_topology, pad_to_divisible, resolve_topology


def test_isotropic_hippocampus_patch_matches_nnunet_plan():
    # 40x56x40 at 1 mm: halve every axis while all stay >= 8 -> 20x28x20 -> 10x14x10 -> 5x7x5, stop.
    kernels, strides = derive_kernels_and_strides([1.0, 1.0, 1.0], [40, 56, 40], max_pooling_steps=None)
    assert strides == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert kernels == [[3, 3, 3]] * 4


def test_isotropic_depth_is_limited_by_min_feature_map_size_and_max_pooling_steps():
    _, strides = derive_kernels_and_strides([1.0] * 3, [128, 128, 128], max_pooling_steps=None)
    assert len(strides) == 6  # 128 -> 4 after 5 halvings
    _, capped = derive_kernels_and_strides([1.0] * 3, [128, 128, 128], max_pooling_steps=3)
    assert len(capped) == 4
    _, coarse = derive_kernels_and_strides([1.0] * 3, [128, 128, 128], max_pooling_steps=None, min_feature_map_size=8)
    assert len(coarse) == 5  # stops at 8


def test_anisotropic_spacing_delays_z_pooling_and_z_kernels():
    # 0.8 x 0.8 x 5 mm: z is 6.25x coarser, so the first two stages pool and convolve in-plane only
    # (stride [2,2,1], kernel [3,3,1]); after two halvings in-plane spacing is 3.2 mm, within 2x
    # of 5 mm, so z gets 3-kernels and pools too; at 12x12x6, z (6 < 8) stops pooling.
    kernels, strides = derive_kernels_and_strides([0.8, 0.8, 5.0], [192, 192, 24], max_pooling_steps=None)
    assert strides == [[1, 1, 1], [2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]]
    assert kernels == [[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]


def test_axis_order_is_respected():
    kernels, strides = derive_kernels_and_strides([5.0, 0.8, 0.8], [24, 192, 192], max_pooling_steps=None)
    assert strides[1] == [1, 2, 2] and kernels[0] == [1, 3, 3]


def test_single_axis_pools_only_while_three_times_min_size():
    # 64x8x8: all pool once (32x4x4); then only x can: 32 -> 16 (>= 12), 16 -> 8 (>= 12), 8 < 12 stop.
    kernels, strides = derive_kernels_and_strides([1.0] * 3, [64, 8, 8], max_pooling_steps=None)
    assert strides == [[1, 1, 1], [2, 2, 2], [2, 1, 1], [2, 1, 1]]
    assert kernels == [[3, 3, 3]] * 4


def test_two_dimensional():
    kernels, strides = derive_kernels_and_strides([1.0, 1.0], [256, 256], max_pooling_steps=None)
    assert len(strides) == 7 and strides[-1] == [2, 2]  # 256 -> 4 after 6 halvings
    assert kernels == [[3, 3]] * 7


def test_pad_and_derive_topology():
    strides = [[1, 1, 1], [2, 2, 1], [2, 2, 2]]
    assert pad_to_divisible([30, 32, 5], strides) == [32, 32, 6]
    assert derive_topology([1.0, 1.0, 1.0], [40, 56, 40], ShapeKnobs()).features == [32, 64, 128, 256]
    assert derive_topology([1.0] * 3, [128] * 3, ShapeKnobs()).features == [32, 64, 128, 256, 320, 320]
    assert derive_topology([1.0] * 2, [512, 512], ShapeKnobs()).features[-1] == 512
    narrow = derive_topology([1.0] * 3, [128] * 3, ShapeKnobs(base_features=16, max_features=128, max_pooling_steps=3))
    assert narrow.features == [16, 32, 64, 128] and narrow.knobs.max_pooling_steps == 3
    # an odd patch is padded so the network can halve it cleanly
    padded = derive_topology([1.0] * 3, [41, 56, 40], ShapeKnobs())
    assert padded.patch_size == [48, 56, 40]
    assert resolve_topology(padded) is padded  # consistent with itself, handed on unchanged


def test_resolve_topology_rejects_inconsistent_plans():
    with pytest.raises(ConfigError, match="both"):
        resolve_topology({"patch_size": [16, 16, 16], "strides": [1, 2, 2]})
    with pytest.raises(ConfigError, match="one each per stage"):
        resolve_topology({"kernel_sizes": [3, 3], "strides": [1, 2, 2]})
    with pytest.raises(ConfigError, match="features"):
        resolve_topology({"patch_size": [16, 16, 16], "features": [8, 16]})
    with pytest.raises(ConfigError, match="2 or 3 axes"):
        derive_kernels_and_strides([1.0], [16], max_pooling_steps=None)


def test_plan_features_are_used_unless_the_config_sets_widths():
    plan = {"patch_size": [16, 16, 16], "features_per_stage": [8, 16, 24]}
    assert resolve_topology(plan).features == [8, 16, 24]
    assert resolve_topology(plan, base_features=4).features == [4, 8, 16]
    assert resolve_topology(plan, max_features=12).features == [12, 12, 12]
    assert resolve_topology({"patch_size": [16, 16, 16]}).features == [32, 64, 128]


def test_planner_configuration_is_accepted():
    """The data planner's configuration carries the rule's result and feeds the models unchanged."""
    import numpy as np

    from medseg.data.config import PlanConfig
    from medseg.data.plan import configurations

    planned = configurations([0.8, 0.8, 5.0], np.array([[192, 192, 24]] * 10), PlanConfig(device="gpu-8gb", max_pooling_steps=10))["3d_fullres"]
    topology = planned.topology
    assert topology == derive_topology([0.8, 0.8, 5.0], planned.patch_size, topology.knobs)
    assert topology.knobs == ShapeKnobs(base_features=32, max_features=320, max_pooling_steps=10, min_feature_map_size=4)
    assert resolve_topology(planned) is topology

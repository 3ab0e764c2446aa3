"""fcn, segnet, deeplabv3plus: the layout each takes from the plan (the contract test covers shapes and gradients)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medseg.models import ModelConfig, build_model, resolve_topology
from medseg.models.blocks import LearnedUpsample
from medseg.models.deeplab import ImagePooling, atrous_rates, kept_downsamplings

ANISO = {"patch_size": [32, 32, 8], "spacing": [0.8, 0.8, 3.0]}  # strides [1,1,1], [2,2,1], [2,2,2], [2,2,1]
NEW = ("fcn", "segnet", "deeplabv3plus")


def _config(name: str, **kwargs) -> ModelConfig:
    return ModelConfig(name=name, base_features=4, max_features=12, **kwargs)


def test_anisotropic_plan_is_what_the_tests_below_assume():
    assert resolve_topology(ANISO).strides == [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 1]]


@pytest.mark.parametrize("name", NEW)
def test_norm_dropout_and_widths_follow_the_config(name):
    instance = build_model(_config(name, dropout=0.2), 1, 2, ANISO)
    batch = build_model(_config(name, norm="batch"), 1, 2, ANISO)
    assert any(isinstance(m, nn.InstanceNorm3d) for m in instance.modules())
    assert not any(isinstance(m, nn.BatchNorm3d) for m in instance.modules())
    assert not any(isinstance(m, nn.InstanceNorm3d) for m in batch.modules())
    assert any(isinstance(m, nn.BatchNorm3d) for m in batch.modules())
    assert any(isinstance(m, nn.Dropout3d) and m.p == 0.2 for m in instance.modules())
    assert not any(isinstance(m, nn.Dropout3d) for m in batch.modules())
    widths = {m.out_channels for m in instance.modules() if isinstance(m, nn.Conv3d)}
    assert max(widths) == 12 and 4 in widths


def test_fcn_fuses_the_three_coarsest_scores_and_supervises_them_natively():
    model = build_model(_config("fcn"), 1, 3, ANISO).train()
    assert model.scored == [1, 2, 3]
    assert [tuple(up.up.stride) for up in model.upsamples] == [(2, 2, 2), (2, 2, 1)]  # stage 2's and 3's strides
    outputs = model(torch.randn(1, 1, 32, 32, 8))
    # full (the fused stride-2 map interpolated), FCN-16s-like (stride 4,4,2), FCN-32s-like (stride 8,8,2)
    assert [tuple(o.shape[2:]) for o in outputs] == [(32, 32, 8), (8, 8, 4), (4, 4, 4)]
    assert isinstance(build_model(_config("fcn", deep_supervision=False), 1, 3, ANISO).train()(torch.randn(1, 1, 32, 32, 8)), torch.Tensor)
    assert len(build_model(_config("fcn", deep_supr_num=1), 1, 3, ANISO).train()(torch.randn(1, 1, 32, 32, 8))) == 2


def test_fcn_upsampling_starts_as_linear_interpolation():
    up = LearnedUpsample(2, 1, [2, 1])
    x = torch.arange(4.0).reshape(1, 1, 4, 1)
    y = up(x)[0, 0, :, 0]
    assert y.shape == (8,)
    # interior values are exactly the half-pixel linear interpolation of 0, 1, 2, 3
    assert torch.allclose(y[1:-1], torch.tensor([0.25, 0.75, 1.25, 1.75, 2.25, 2.75]))


def test_segnet_pools_with_the_plan_strides_and_unpools_with_their_indices():
    model = build_model(_config("segnet"), 1, 2, ANISO)
    assert [m.kernel_size for m in model.pools] == [(2, 2, 1), (2, 2, 2), (2, 2, 1)]
    assert all(m.return_indices for m in model.pools)
    assert [m.kernel_size for m in model.unpools] == [(2, 2, 1), (2, 2, 2), (2, 2, 1)]
    assert not any(isinstance(m, (nn.ConvTranspose3d, nn.Upsample)) for m in model.modules())
    # Sparse upsampling: each pooled value goes back to its argmax position, zeros elsewhere.
    pooled, index = model.pools[0](torch.randn(1, 1, 4, 4, 2))
    restored = model.unpools[0](pooled, index, output_size=(4, 4, 2))
    assert int((restored != 0).sum()) == pooled.numel()


def test_deeplab_rates_follow_patch_extent_and_spacing():
    # Output stride 8,8,2 on 0.8,0.8,5 mm x 192,192,24: map 24x24x12 of 6.4x6.4x10 mm voxels.
    topology = resolve_topology({"patch_size": [192, 192, 24], "spacing": [0.8, 0.8, 5.0]})
    keep = kept_downsamplings(topology.n_stages)
    assert keep == 3
    kernel, rates = atrous_rates(topology, keep, 4)
    assert kernel == [3, 3, 3]
    assert rates == [(4, 4, 2), (7, 7, 5), (11, 11, 5)]  # z: fewer voxels and thicker ones; 2r+1 <= 24 and <= 12
    # The paper's 33x33 map at output stride 16 gives roughly its 6/12/18.
    paper = resolve_topology({"patch_size": [528, 528], "kernel_sizes": [3] * 5, "strides": [1, 2, 2, 2, 2]})
    assert atrous_rates(paper, 4, 4)[1] == [(5, 5), (11, 11), (16, 16)]
    # A 4-voxel map leaves one distinct rate.
    assert atrous_rates(resolve_topology({"patch_size": [8, 8, 8]}), 1, 4)[1] == [(1, 1, 1)]


def test_deeplab_dilates_instead_of_downsampling_after_the_kept_steps():
    model = build_model(_config("deeplabv3plus"), 1, 2, ANISO)
    assert model.keep == 2 and model.low_stage == 1
    last = model.stages[3].conv1[0]
    assert tuple(last.stride) == (1, 1, 1) and tuple(last.dilation) == (2, 2, 1)  # the skipped (2, 2, 1)
    assert tuple(model.stages[2].conv1[0].stride) == (2, 2, 2)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_deeplab_image_pooling_trains_with_batch_size_one(norm):
    model = build_model(_config("deeplabv3plus", norm=norm), 1, 2, ANISO).train()
    pooling = [m for m in model.modules() if isinstance(m, ImagePooling)]
    assert pooling and not any(isinstance(m, (nn.InstanceNorm3d, nn.BatchNorm3d)) for m in pooling[0].modules())
    out = model(torch.randn(1, 1, 32, 32, 8))
    out.mean().backward()
    assert out.shape == (1, 2, 32, 32, 8)

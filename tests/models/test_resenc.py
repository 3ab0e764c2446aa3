"""resenc_unet (nnU-Net ResEnc): the layout it takes from the plan, its initialisation and the M/L/XL presets
(the contract test covers shapes, gradients and save/load; the ONNX and training tests cover export and a run)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medseg.errors import ConfigError
from medseg.models import ModelConfig, build_model, resolve_topology
from medseg.models.encoder import _first_upsampling, encoder_parameters
from medseg.models.resenc import BasicBlockD, RESENC_PRESETS, blocks_per_stage, resenc_preset

ANISO = {"patch_size": [32, 32, 8], "spacing": [0.8, 0.8, 3.0]}  # strides [1,1,1], [2,2,1], [2,2,2], [2,2,1]
PATCH = ANISO["patch_size"]


def _config(**kwargs) -> ModelConfig:
    return ModelConfig(name="resenc_unet", base_features=4, max_features=12, **kwargs)


def test_anisotropic_plan_is_what_the_tests_below_assume():
    topology = resolve_topology(ANISO)
    assert topology.strides == [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 1]]
    assert topology.kernel_sizes == [[3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3]]


def test_encoder_has_nnunets_residual_blocks_with_the_plans_kernels_strides_and_widths():
    model = build_model(_config(), 1, 2, ANISO)
    assert [len(stage) for stage in model.stages] == [1, 3, 4, 6]
    assert all(isinstance(block, BasicBlockD) for stage in model.stages for block in stage)
    first = [stage[0] for stage in model.stages]
    assert [list(block.conv1[0].stride) for block in first] == [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 1]]
    assert [list(block.conv1[0].kernel_size) for block in first] == [[3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    assert [block.conv1[0].out_channels for block in first] == [4, 8, 12, 12]  # 4 doubling, capped at 12
    # later blocks of a stage keep the resolution
    assert all(tuple(block.conv1[0].stride) == (1, 1, 1) for stage in model.stages for block in stage[1:])
    # ResNet-D shortcut: average pooling by the stride (no voxel dropped), 1x1 conv only where the width changes
    assert isinstance(first[0].shortcut, nn.Identity)
    assert isinstance(first[1].shortcut[0], nn.AvgPool3d) and first[1].shortcut[0].kernel_size == (2, 2, 1)
    assert isinstance(first[1].shortcut[1], nn.Conv3d) and first[1].shortcut[1].kernel_size == (1, 1, 1)
    assert len(first[3].shortcut) == 1  # 12 -> 12: pooling only
    # the stem: one conv at full resolution with the first stage's kernel
    assert model.stem[0].kernel_size == (3, 3, 1) and model.stem[0].stride == (1, 1, 1)


def test_decoder_is_plain_one_conv_per_level_upsampled_by_the_plans_strides():
    model = build_model(_config(), 1, 2, ANISO)
    assert [tuple(up.stride) for up in model.upsamples] == [(2, 2, 1), (2, 2, 2), (2, 2, 1)]  # coarsest level first
    assert [tuple(up.kernel_size) for up in model.upsamples] == [(2, 2, 1), (2, 2, 2), (2, 2, 1)]
    assert [len(level) for level in model.decoders] == [1, 1, 1]
    assert [level[0][0].in_channels for level in model.decoders] == [24, 16, 8]  # upsampled + skip, concatenated
    assert [level[0][0].kernel_size for level in model.decoders] == [(3, 3, 3), (3, 3, 3), (3, 3, 1)]
    assert not any(isinstance(m, BasicBlockD) for level in model.decoders for m in level.modules())


def test_deep_supervision_heads_at_native_resolution():
    x = torch.randn(1, 1, *PATCH)
    outputs = build_model(_config(), 1, 3, ANISO).train()(x)
    assert [tuple(o.shape[2:]) for o in outputs] == [(32, 32, 8), (16, 16, 8), (8, 8, 4)]
    assert len(build_model(_config(deep_supr_num=1), 1, 3, ANISO).train()(x)) == 2
    plain = build_model(_config(deep_supervision=False), 1, 3, ANISO)
    assert len(plain.heads) == 1 and isinstance(plain.train()(x), torch.Tensor)  # no unused (gradient-less) heads


def test_every_block_starts_as_its_shortcut_and_convolutions_are_he_initialised():
    """nnU-Net's init: the residual branch's last norm at zero, so a block is act(shortcut(x)) before training."""
    torch.manual_seed(0)
    model = build_model(_config(), 1, 2, ANISO).eval()
    block = model.stages[2][1]  # 12 -> 12, stride 1: identity shortcut
    x = torch.randn(1, 12, 8, 8, 4)
    with torch.no_grad():
        assert torch.equal(block(x.clone()), nn.functional.leaky_relu(x, 0.01))
    assert all(not b.conv2[1].weight.detach().any() for stage in model.stages for b in stage)
    wide = build_model(ModelConfig(name="resenc_unet", base_features=32), 1, 2, {"patch_size": [64, 64, 64]})
    conv = wide.stages[3][2].conv1[0]  # 256 -> 256, 3x3x3: He std sqrt(2 / (1 + 0.01^2) / fan_in)
    expected = (2 / (1 + 1e-4) / (256 * 27)) ** 0.5
    assert abs(float(conv.weight.detach().std()) / expected - 1) < 0.02


def test_norm_dropout_and_2d():
    batch = build_model(_config(norm="batch", dropout=0.2), 1, 2, ANISO)
    assert any(isinstance(m, nn.BatchNorm3d) for m in batch.modules())
    assert not any(isinstance(m, nn.InstanceNorm3d) for m in batch.modules())
    dropouts = [m for m in batch.modules() if isinstance(m, nn.Dropout3d)]
    assert dropouts and all(m.p == 0.2 for m in dropouts)
    assert not any(isinstance(m, nn.Dropout3d) for b in batch.stages[1] for m in b.conv2.modules())  # first conv only
    flat = build_model(_config(), 1, 2, {"patch_size": [32, 32], "spacing": [1.0, 1.0]}).train()
    assert any(isinstance(m, nn.InstanceNorm2d) for m in flat.modules()) and [len(s) for s in flat.stages] == [1, 3, 4, 6]
    assert [tuple(o.shape[2:]) for o in flat(torch.randn(1, 1, 32, 32))] == [(32, 32), (16, 16), (8, 8)]


def test_registered_encoder_is_the_stem_and_stages_as_the_general_rule_finds():
    model = build_model(_config(), 1, 3, ANISO)
    declared = [name for name, _ in encoder_parameters(model, "resenc_unet")]
    assert declared and all(name.split(".")[0] in ("stem", "stages") for name in declared)
    names = [name for name, _ in model.named_parameters()]
    first = _first_upsampling(model)
    assert names[: next(i for i, n in enumerate(names) if n.startswith(first + "."))] == declared


def test_blocks_per_stage_extend_with_sixes_for_deeper_plans():
    assert blocks_per_stage(3) == [1, 3, 4]
    assert blocks_per_stage(8) == [1, 3, 4, 6, 6, 6, 6, 6]


def test_presets_are_nnunets_memory_targets_with_one_network():
    assert {name: preset.gpu_memory_gb for name, preset in RESENC_PRESETS.items()} == {"M": 8.0, "L": 24.0, "XL": 40.0}
    assert {preset.blocks_per_stage for preset in RESENC_PRESETS.values()} == {(1, 3, 4, 6, 6, 6)}
    assert all(preset.decoder_convs_per_stage == 1 for preset in RESENC_PRESETS.values())
    assert resenc_preset("l") is resenc_preset("ResEncL") is resenc_preset("resenc_l") is RESENC_PRESETS["L"]
    # what the planner's activation estimate counts: the stem or the shortcut's 1x1, and two convolutions per block
    assert resenc_preset("M").encoder_convs(5) == [3, 7, 9, 13, 13]


def test_unknown_preset_is_a_config_error_listing_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown ResEnc preset 'XXL'; available: M, L, XL"):
        resenc_preset("XXL")


def test_counts_match_the_built_network():
    """encoder_convs describes the network the builder makes (stem + 2 per block + a projection per later stage)."""
    plan = {"patch_size": [64, 64, 64]}
    model = build_model(ModelConfig(name="resenc_unet", base_features=4, max_features=64), 1, 2, plan)
    per_stage = [sum(isinstance(m, nn.Conv3d) for m in stage.modules()) for stage in model.stages]
    per_stage[0] += 1  # the stem
    assert per_stage == resenc_preset("M").encoder_convs(len(model.stages))

"""Registry behaviour: lookup errors, documentation, registration rules, model-specific layout."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from medseg.config.loader import build as build_config
from medseg.errors import ConfigError
from medseg.models import ModelConfig, available_models, build_model, register_model
from medseg.models import registry


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError) as error:
        build_model(ModelConfig(name="unetr++"), 1, 2, {"patch_size": [16, 16, 16]})
    message = str(error.value)
    assert "unetr++" in message
    for name in ("dynunet", "unet", "segresnet", "fcn", "segnet", "deeplabv3plus"):
        assert name in message


def test_every_entry_has_a_summary():
    models = available_models()
    assert {"dynunet", "unet", "segresnet", "fcn", "segnet", "deeplabv3plus"} <= set(models)
    assert all(summary and len(summary) > 20 for summary in models.values())


def test_register_requires_docstring_and_unique_name():
    def undocumented(config, in_channels, out_channels, plan):
        return torch.nn.Identity()

    with pytest.raises(TypeError, match="docstring"):
        register_model("undocumented")(undocumented)

    def other(config, in_channels, out_channels, plan):
        """A second builder claiming an existing name."""
        return torch.nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register_model("dynunet")(other)


def test_new_entry_is_buildable_by_name():
    @register_model("tiny-test-net")
    def build_tiny(config, in_channels, out_channels, plan):
        """1x1 convolution, only for this test."""
        return torch.nn.Conv3d(in_channels, out_channels, 1)

    try:
        assert "tiny-test-net" in available_models()
        model = build_model(ModelConfig(name="tiny-test-net"), 2, 4)
        assert model(torch.zeros(1, 2, 4, 4, 4)).shape == (1, 4, 4, 4, 4)
    finally:
        registry._REGISTRY.pop("tiny-test-net")


def test_model_config_rejects_unknown_keys_and_bad_norm():
    with pytest.raises(ConfigError, match="valid keys"):
        build_config(ModelConfig, {"nomr": "batch"})
    with pytest.raises(ConfigError, match="norm"):
        build_config(ModelConfig, {"norm": "group"})


def test_config_import_does_not_load_torch():
    code = "import sys, medseg.models.config, medseg.losses.config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def _conv_kernels(model: torch.nn.Module) -> list[tuple[int, ...]]:
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    return [tuple(m.kernel_size) for m in convs if m.kernel_size != (1, 1, 1)]


def test_dynunet_follows_explicit_plan_and_deep_supervision_levels():
    plan = {
        "patch_size": [32, 32, 8],
        "kernel_sizes": [[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2]],
        "features": [4, 8, 12, 16],
    }
    model = build_model(ModelConfig(), 1, 3, plan).train()  # widths from the plan
    outputs = model(torch.randn(1, 1, 32, 32, 8))
    # nnU-Net: one output per decoder level above the bottleneck, at native resolution.
    assert [tuple(o.shape[2:]) for o in outputs] == [(32, 32, 8), (16, 16, 8), (8, 8, 4)]
    assert (3, 3, 1) in _conv_kernels(model)
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert max(widths) == 16

    fewer = build_model(ModelConfig(base_features=4, deep_supr_num=1), 1, 3, plan).train()
    assert len(fewer(torch.randn(1, 1, 32, 32, 8))) == 2
    clipped = build_model(ModelConfig(base_features=4, deep_supr_num=9), 1, 3, plan).train()
    assert len(clipped(torch.randn(1, 1, 32, 32, 8))) == 3
    plain = build_model(ModelConfig(base_features=4, deep_supervision=False), 1, 3, plan).train()
    assert isinstance(plain(torch.randn(1, 1, 32, 32, 8)), torch.Tensor)


def test_dynunet_norm_choice():
    plan = {"patch_size": [16, 16, 16]}
    instance = build_model(ModelConfig(base_features=4, norm="instance"), 1, 2, plan)
    batch = build_model(ModelConfig(base_features=4, norm="batch"), 1, 2, plan)
    assert any(isinstance(m, torch.nn.InstanceNorm3d) for m in instance.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in instance.modules())
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in batch.modules())


def test_dynunet_without_plan_uses_spatial_dims_and_depth():
    model = build_model(ModelConfig(base_features=4, spatial_dims=2, max_pooling_steps=3), 1, 2, None).eval()
    assert model(torch.randn(1, 1, 16, 24)).shape == (1, 2, 16, 24)


def test_indivisible_patch_is_a_config_error():
    plan = {"patch_size": [20, 16, 16], "kernel_sizes": [3, 3, 3, 3], "strides": [1, 2, 2, 2]}
    with pytest.raises(ConfigError, match=r"use \[24, 16, 16\]"):
        build_model(ModelConfig(), 1, 2, plan)


def test_too_shallow_plan_is_a_config_error():
    with pytest.raises(ConfigError, match="at least 3 stages"):
        build_model(ModelConfig(), 1, 2, {"patch_size": [8, 8, 8]})

"""One network-shape derivation: the plan's typed topology reaches the builders unchanged, overrides re-derive it
by the same rule from the plan's own knobs, and plans and checkpoints of the old flat form still build."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from medseg.config.loader import load_config
from medseg.data.config import PlanConfig
from medseg.data.plan import configurations
from medseg.models import ModelConfig, available_models, build_model
from medseg.models import registry
from medseg.models.registry import model_topology
from medseg.models.topology import ShapeKnobs, derive_topology
from medseg.schema import Plan

HIPPOCAMPUS = np.array([[36, 50, 35]] * 200)  # median shape at 1 mm: the CPU plan's patch is 40x56x40
CPU_KNOBS = ShapeKnobs(base_features=16, max_features=128, max_pooling_steps=6, min_feature_map_size=4)


def _cpu_plan_3d():
    return configurations([1.0, 1.0, 1.0], HIPPOCAMPUS, PlanConfig(device="cpu-2core"))["3d_fullres"]


def test_a_patch_override_keeps_the_cpu_plans_narrow_network():
    """The bug of issue #26 item 11: train.patch_size dropped the plan's widths and the model re-derived the network
    with its own defaults (32 features capped at 320); a CPU plan's 16-wide network silently grew 4x in FLOPs."""
    planned = _cpu_plan_3d()
    assert planned.patch_size == [40, 56, 40] and planned.features_per_stage == [16, 32, 64, 128]
    bigger = planned.with_overrides(patch_size=[80, 96, 80])  # what the trainer does with train.patch_size
    network = build_model(ModelConfig(), 1, 3, bigger.network_plan())
    # one stage more for the larger patch, the plan's base width and its CPU cap (before: [32, 64, 128, 256, 320])
    assert list(network.filters) == [16, 32, 64, 128, 128]
    assert bigger.topology == derive_topology([1.0, 1.0, 1.0], [80, 96, 80], CPU_KNOBS)  # the same one rule, the plan's knobs
    assert bigger.topology.knobs == planned.topology.knobs == CPU_KNOBS


def test_the_plans_topology_reaches_every_builder_unchanged(monkeypatch):
    """Every registry entry builds, 2D and 3D, from the plan configuration's typed topology: the very object, not a copy."""
    planned = configurations([1.0, 1.0, 2.5], np.array([[64, 64, 32]] * 20),
                             PlanConfig(device="cpu-2core", patch_size_3d=[16, 16, 8], patch_size_2d=[32, 32]))
    received = []
    for name in available_models():
        entry = registry.model_entry(name)

        def spy(config, in_channels, out_channels, topology, builder=entry.builder):
            received.append(topology)
            return builder(config, in_channels, out_channels, topology)

        monkeypatch.setitem(registry._REGISTRY, name, dataclasses.replace(entry, builder=spy))
    for configuration in (planned["3d_fullres"], planned["2d"]):
        for name in available_models():
            network = build_model(ModelConfig(name=name, deep_supervision=False), 2, 3, configuration).eval()
            assert received.pop() is configuration.topology
            with torch.no_grad():
                assert network(torch.randn(1, 2, *configuration.patch_size)).shape == (1, 3, *configuration.patch_size), name


def test_model_knobs_override_the_plans_through_the_same_rule():
    planned = _cpu_plan_3d()
    shallow = model_topology(ModelConfig(max_pooling_steps=2), planned)
    assert shallow == derive_topology([1.0, 1.0, 1.0], [40, 56, 40], CPU_KNOBS.model_copy(update={"max_pooling_steps": 2}))
    assert shallow.strides == [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
    wider = model_topology(ModelConfig(base_features=24), planned)
    assert wider.features == [24, 48, 96, 128] and wider.strides == planned.strides  # a width alone keeps the plan's cap and stages
    assert planned.with_overrides(knobs=ModelConfig(base_features=24).shape_overrides()).topology == wider
    assert model_topology(ModelConfig(base_features=16, max_features=128), planned) is planned.topology  # the plan's own: unchanged


def test_an_indivisible_patch_override_names_the_size_that_fits():
    with pytest.raises(Exception, match=r"use \[40, 56, 40\]"):
        _cpu_plan_3d().with_overrides(patch_size=[36, 56, 40])


# --- the flat form of plan format 2 (medseg <= 0.2), as `medseg plan --device cpu-2core` wrote it ---------------------------
def _format_2_plan() -> dict:
    """A CPU plan of the old form: the network flat in each configuration, no knobs; its 3 stages end at 64 features,
    below the CPU cap of 128 that only the recorded plan.* settings know."""
    flat = {"patch_size": [24, 20, 12], "batch_size": 2, "spacing": [1.0, 1.0, 1.0], "n_stages": 3, "features_per_stage": [16, 32, 64],
            "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 1]], "estimated_memory_gb": 1.5}
    return {
        "plan_version": 2, "dataset": "Tiny", "labels": {"0": "background", "1": "organ", "2": "tumor"}, "target_spacing": [1.0, 1.0, 1.0],
        "preprocessing": {"target_spacing": [1.0, 1.0, 1.0], "num_channels": 1, "labels": [0, 1, 2],
                          "normalization": [{"channel": 0, "name": "CT", "modality": "MR", "scheme": "zscore"}]},
        "planned_for": {"kind": "cpu", "memory_gb": 8.0, "cores": 2},
        "configurations": {"3d_fullres": flat}, "aliases": {"3d": "3d_fullres"},
        "config": {"base_features": 32, "max_features_3d": 320, "cpu_base_features": 16, "cpu_max_features_3d": 128,
                   "max_pooling_steps": 6, "min_feature_map_size": 4},
    }


def test_a_format_2_plan_loads_with_the_knobs_it_was_planned_with():
    plan = Plan.model_validate(_format_2_plan())
    configuration = plan.configuration("3d")
    assert configuration.topology.features == [16, 32, 64] and configuration.strides == [[1, 1, 1], [2, 2, 2], [2, 2, 1]]
    assert configuration.topology.knobs == CPU_KNOBS  # from plan.config, not guessed from the stored widths (cap 64)
    assert configuration.with_overrides(patch_size=[48, 40, 24]).features_per_stage == [16, 32, 64, 128]
    stored = plan.model_dump(mode="json")
    assert stored["plan_version"] == 3 and "n_stages" not in stored["configurations"]["3d_fullres"]
    assert stored["configurations"]["3d_fullres"]["topology"]["knobs"]["max_features"] == 128
    assert Plan.model_validate(stored) == plan


def _format_2_checkpoint(tmp_path, configuration: dict, model: dict, network: torch.nn.Module):
    """A checkpoint file as medseg <= 0.2 wrote it: flat configuration, knob names max_depth/min_feature_size."""
    plan = _format_2_plan()
    payload = {"format_version": 2, "medseg_version": "0.2.0", "model": network.state_dict(),
               "model_spec": {"name": "dynunet", "in_channels": 1, "out_channels": 3, "configuration": configuration},
               "config": {"model": {"name": "dynunet", "base_features": None, "max_features": None, "max_depth": None, "min_feature_size": 4, **model}},
               "plan": plan, "labels": plan["labels"], "fold": 0, "epoch": 1}
    path = tmp_path / "checkpoint_best.pt"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("case", ["patch overridden", "plan's layout, model widths"])
def test_a_format_2_checkpoint_rebuilds_the_network_it_was_trained_with(tmp_path, case):
    from medseg.infer.model import load_model

    flat = {key: value for key, value in _format_2_plan()["configurations"]["3d_fullres"].items()}
    if case == "patch overridden":  # medseg <= 0.2 cleared the layout and the model derived it with its defaults
        flat.update(patch_size=[48, 40, 24], n_stages=None, features_per_stage=None, kernel_sizes=None, strides=None, estimated_memory_gb=None)
        model, layout = {}, {"kernel_sizes": [[3, 3, 3]] * 4, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]], "features": [32, 64, 128, 256]}
    else:
        model, layout = {"base_features": 8, "max_features": 24}, {"kernel_sizes": flat["kernel_sizes"], "strides": flat["strides"], "features": [8, 16, 24]}
    torch.manual_seed(0)
    trained = build_model(ModelConfig(), 1, 3, {"patch_size": flat["patch_size"], "spacing": [1.0, 1.0, 1.0], **layout})  # explicit layout
    loaded = load_model(_format_2_checkpoint(tmp_path, flat, model, trained))
    network = loaded.networks[0]
    assert list(network.filters) == layout["features"] and [list(s) for s in network.strides] == layout["strides"]
    for name, value in trained.state_dict().items():
        assert torch.equal(network.state_dict()[name], value), name


def test_old_knob_names_are_read_as_todays(caplog):
    with caplog.at_level(logging.WARNING):
        config = ModelConfig.model_validate({"max_depth": 3, "min_feature_size": 8})
    assert (config.max_pooling_steps, config.min_feature_map_size) == (3, 8)
    assert "model.max_depth is now called model.max_pooling_steps" in caplog.text
    assert ModelConfig.model_validate({"max_depth": None, "min_feature_size": 4}).shape_overrides() == {}  # old defaults: the plan's
    assert load_config(None, ["model.max_depth=2"]).model.max_pooling_steps == 2
    with pytest.raises(ValidationError, match="old name"):
        ModelConfig.model_validate({"max_depth": 3, "max_pooling_steps": 2})

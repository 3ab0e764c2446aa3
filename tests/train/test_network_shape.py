"""The trainer builds the network its plan describes: ``train.patch_size`` re-derives the shape with the plan's own
knobs (not the model's defaults), the checkpoint carries the result, and a run of medseg <= 0.2 (flat configuration,
old knob names) still resumes."""

from __future__ import annotations

import shutil

import torch

from medseg.data.cache import read_cache
from medseg.models.topology import derive_topology
from medseg.train.checkpoint import load_checkpoint
from medseg.train.trainer import LAST, Trainer
from tests.train.conftest import tiny_config

CPU = "train.device=cpu"
PLAN_WIDTHS = ["model.base_features=null", "model.max_features=null"]  # the tiny config narrows the network; these keep the plan's


def test_a_patch_override_builds_the_plans_network_at_the_new_patch(tiny_cache, tmp_path):
    planned = read_cache(tiny_cache)[0].configuration("3d")
    trainer = Trainer(tiny_config(CPU, *PLAN_WIDTHS, "train.patch_size=[48,48,24]"), tiny_cache, tmp_path / "run", progress=False)
    expected = derive_topology(planned.spacing, [48, 48, 24], planned.topology.knobs)  # the planner's rule and knobs
    assert trainer.configuration.topology == expected and expected.n_stages == 4
    assert trainer.model_spec.configuration.features_per_stage == expected.features  # what the checkpoint will record
    with trainer.session as step:
        assert list(step.network.filters) == expected.features and expected.features[0] == planned.topology.knobs.base_features


def _flat(configuration: dict, overridden: bool) -> dict:
    """A configuration as medseg <= 0.2 stored it: the layout flat, no knobs; None after a train.patch_size override."""
    configuration = dict(configuration)
    topology = configuration.pop("topology")
    if overridden:
        return {**configuration, "n_stages": None, "features_per_stage": None, "kernel_sizes": None, "strides": None, "estimated_memory_gb": None}
    return {**configuration, "n_stages": len(topology["strides"]), "features_per_stage": topology["features_per_stage"],
            "kernel_sizes": topology["kernel_sizes"], "strides": topology["strides"]}


def test_a_run_of_the_old_checkpoint_format_resumes(tiny_cache, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(CPU, "train.epochs=1", "train.iterations_per_epoch=2"), tiny_cache, run, progress=False).fit()
    raw = torch.load(run / LAST, map_location="cpu", weights_only=True)
    planned = read_cache(tiny_cache)[0].configuration("3d")
    overridden = raw["model_spec"]["configuration"]["patch_size"] != planned.patch_size
    raw["format_version"], raw["plan"]["plan_version"] = 2, 2
    raw["model_spec"]["configuration"] = _flat(raw["model_spec"]["configuration"], overridden)
    raw["plan"]["configurations"] = {name: _flat(value, False) for name, value in raw["plan"]["configurations"].items()}
    model = raw["config"]["model"]
    model["max_depth"], model["min_feature_size"] = model.pop("max_pooling_steps"), model.pop("min_feature_map_size") or 4
    torch.save(raw, run / LAST)
    shutil.copy(run / LAST, tmp_path / "old_last.pt")

    resumed = Trainer(tiny_config(CPU, "train.epochs=2", "train.iterations_per_epoch=2"), tiny_cache, run, resume=True, progress=False)
    resumed.fit()
    assert resumed.counters.epoch == 2
    old = load_checkpoint(tmp_path / "old_last.pt")
    for name, value in old.model.items():  # the old weights were loaded (then trained on): same names and shapes
        assert resumed.step.network.state_dict()[name].shape == value.shape, name


def test_an_old_run_with_one_width_knob_resumes_with_the_network_it_was_training(tiny_cache, tmp_path):
    """medseg <= 0.2 capped a lone ``model.base_features`` at nnU-Net's 320; the rule now keeps the plan's cap (128 on a
    CPU plan). A run started then resumes with its own widths, not the ones its config would give today."""
    run = tmp_path / "run"
    old_widths = ["model.base_features=64", "model.max_features=320"]  # what the old code built for base_features=64 alone
    Trainer(tiny_config(CPU, *old_widths, "train.epochs=1", "train.iterations_per_epoch=2"), tiny_cache, run, progress=False).fit()
    raw = torch.load(run / LAST, map_location="cpu", weights_only=True)
    raw["format_version"], raw["plan"]["plan_version"] = 2, 2
    raw["model_spec"]["configuration"] = _flat(raw["model_spec"]["configuration"], overridden=False)
    raw["plan"]["configurations"] = {name: _flat(value, False) for name, value in raw["plan"]["configurations"].items()}
    raw["config"]["model"]["max_features"] = None  # the old config named only base_features
    torch.save(raw, run / LAST)
    trained_widths = raw["model_spec"]["configuration"]["features_per_stage"]
    assert max(trained_widths) > 128, "the cap must bind for this test to mean anything"

    today = Trainer(tiny_config(CPU, "model.base_features=64", "model.max_features=null"), tiny_cache, tmp_path / "new", progress=False)
    assert today.configuration.features_per_stage != trained_widths  # a new run with that config gets the plan's cap
    resumed = Trainer(tiny_config(CPU, "model.base_features=64", "model.max_features=null", "train.epochs=2", "train.iterations_per_epoch=2"),
                      tiny_cache, run, resume=True, progress=False)
    resumed.fit()
    assert resumed.counters.epoch == 2 and list(resumed.step.network.filters) == trained_widths

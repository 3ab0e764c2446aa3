"""Plan: target spacing rules, normalization choice, topology, memory budget, overrides, hashing, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from medseg.cli.dataset_cmds import register
from medseg.config.loader import load_config
from medseg.data.config import PlanConfig
from medseg.data.dataset import load_dataset
from medseg.data.fingerprint import compute_fingerprint
from medseg.data.plan import activation_bytes_per_sample, configurations, load_plan, make_plan, plan_dataset, save_plan, target_spacing
from medseg.models.topology import ShapeKnobs, derive_topology
from medseg.schema import Plan

GPU8 = PlanConfig(device="gpu-8gb")  # nnU-Net's reference machine: these tests check its rules
from medseg.errors import ConfigError
from medseg.logging_setup import console
from tests.data._builders import make_msd


@pytest.fixture(scope="module")
def ct_dataset(tmp_path_factory):
    root = make_msd(tmp_path_factory.mktemp("ct") / "ds", cases=4, spacings=[(0.8, 0.8, 2.5), (0.7, 0.7, 1.5)], orientations=["RAS", "LPS"])
    description = load_dataset(root)
    return description, compute_fingerprint(description, workers=1, progress=False)


def test_median_spacing_for_isotropic_data():
    spacings = np.array([[1.0, 1.0, 1.2], [0.9, 0.9, 1.0], [1.1, 1.1, 1.4]])
    shapes = np.array([[100, 100, 90]] * 3)
    spacing, reason = target_spacing(spacings, shapes, PlanConfig())
    assert spacing == pytest.approx([1.0, 1.0, 1.2])
    assert reason.startswith("median spacing")


def test_anisotropy_rule_uses_the_10th_percentile_of_the_coarse_axis():
    spacings = np.array([[0.7, 0.7, z] for z in (2.5, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 3.0)])
    shapes = np.array([[512, 512, 40]] * 10)
    spacing, reason = target_spacing(spacings, shapes, PlanConfig())
    assert spacing[:2] == pytest.approx([0.7, 0.7])
    assert spacing[2] == pytest.approx(np.percentile(spacings[:, 2], 10))
    assert spacing[2] < 5.0
    assert "anisotropic" in reason and "axis 2" in reason


def test_anisotropic_axis_with_many_voxels_keeps_the_median():
    spacings = np.array([[0.7, 0.7, 5.0]] * 5)
    shapes = np.array([[100, 100, 200]] * 5)
    spacing, reason = target_spacing(spacings, shapes, PlanConfig())
    assert spacing[2] == pytest.approx(5.0)
    assert "enough voxels" in reason


def test_topology_avoids_pooling_thick_slices_first():
    topo = derive_topology([0.6, 0.6, 3.6], [256, 320, 20], ShapeKnobs(max_pooling_steps=6))
    assert topo.strides[0] == [1, 1, 1]
    assert topo.strides[1] == [2, 2, 1] and topo.kernel_sizes[0] == [3, 3, 1]
    assert topo.kernel_sizes[-1] == [3, 3, 3]
    assert len(topo.strides) == len(topo.kernel_sizes)
    total = np.prod(np.array(topo.strides), axis=0)
    assert all(p % t == 0 for p, t in zip(topo.patch_size, total))


def test_hippocampus_like_shape_gives_the_nnunet_patch():
    result = configurations([1.0, 1.0, 1.0], np.array([[36, 50, 35]] * 200), GPU8)
    assert result["3d_fullres"].patch_size == [40, 56, 40]
    assert result["3d_fullres"].strides[1:] == [[2, 2, 2]] * 3


def test_patch_and_batch_respect_the_memory_budget():
    shapes = np.array([[400, 400, 300]] * 100)
    small = configurations([1.0, 1.0, 1.0], shapes, PlanConfig(device="gpu-8gb", gpu_memory_gb=8))["3d_fullres"]
    large = configurations([1.0, 1.0, 1.0], shapes, PlanConfig(device="gpu-8gb", gpu_memory_gb=40))["3d_fullres"]
    assert small.estimated_memory_gb <= 8 and large.estimated_memory_gb <= 40
    assert np.prod(large.patch_size) * large.batch_size > np.prod(small.patch_size) * small.batch_size
    config = PlanConfig()
    features = [min(32 * 2**s, 320) for s in range(small.n_stages)]
    per_sample = activation_bytes_per_sample(small.patch_size, small.strides, features, config)
    assert per_sample * small.batch_size / 1024**3 + config.memory_overhead_gb == pytest.approx(small.estimated_memory_gb, abs=0.01)


def test_ct_plan_normalization_and_contents(ct_dataset):
    description, fingerprint = ct_dataset
    plan = make_plan(description, fingerprint, GPU8)
    norm = plan.preprocessing.normalization[0]
    stats = fingerprint["intensity_foreground"][0]
    assert norm.scheme == "ct"
    assert norm.clip == [stats["percentile_00_5"], stats["percentile_99_5"]]
    assert norm.mean == stats["mean"] and norm.std == stats["std"]
    data = json.loads(json.dumps(plan.model_dump(mode="json")))  # JSON-ready
    for key in ("plan_version", "dataset", "labels", "channels", "target_spacing", "canonical_orientation", "configurations", "fingerprint_summary", "preprocessing_hash"):
        assert key in data
    assert set(plan.configurations) == {"2d", "3d_fullres"} and plan.resolve("3d") == "3d_fullres"
    assert plan.configurations["2d"].slice_axis == 2
    assert plan.target_spacing == pytest.approx([0.75, 0.75, 2.0])
    assert Plan.model_validate(data) == plan


def test_mr_uses_per_image_zscore_with_mask_when_cropping_shrinks_a_lot(tmp_path):
    root = make_msd(tmp_path / "mr", cases=2, modality="MR", shape=(40, 40, 30), name="TinyMR")
    description = load_dataset(root)
    fingerprint = compute_fingerprint(description, workers=1, progress=False)
    norm = make_plan(description, fingerprint).preprocessing.normalization[0]
    assert norm.scheme == "zscore"
    assert norm.use_nonzero_mask == (fingerprint["median_crop_fraction"] < 0.75)
    fingerprint["median_crop_fraction"] = 0.5
    assert make_plan(description, fingerprint).preprocessing.normalization[0].use_nonzero_mask is True
    fingerprint["median_crop_fraction"] = 0.9
    assert make_plan(description, fingerprint).preprocessing.normalization[0].use_nonzero_mask is False


def test_overrides_from_yaml_and_set(tmp_path, ct_dataset):
    description, fingerprint = ct_dataset
    path = tmp_path / "config.yaml"
    path.write_text("plan:\n  device: gpu-8gb\n  gpu_memory_gb: 24\n  batch_size_3d: 3\n")
    config = load_config(path, ["plan.target_spacing=[1,1,2]", "plan.normalization={0: zscore}"])
    plan = make_plan(description, fingerprint, config.plan)
    assert plan.target_spacing == [1.0, 1.0, 2.0] and "config" in plan.target_spacing_reason
    assert plan.configuration("3d").batch_size == 3
    assert plan.preprocessing.normalization[0].scheme == "zscore"
    assert plan.planned_for.kind == "cuda" and plan.planned_for.memory_gb == 24
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, ["plan.not_a_setting=1"])


def test_hash_follows_preprocessing_only_and_hand_edits(tmp_path, ct_dataset):
    description, fingerprint = ct_dataset
    base = make_plan(description, fingerprint, GPU8)
    bigger_batch = make_plan(description, fingerprint, PlanConfig(device="gpu-8gb", batch_size_3d=7))
    other_spacing = make_plan(description, fingerprint, PlanConfig(device="gpu-8gb", target_spacing=[1, 1, 1]))
    nearest = make_plan(description, fingerprint, PlanConfig(device="gpu-8gb", label_resampling="nearest"))
    assert bigger_batch.preprocessing_hash == base.preprocessing_hash
    assert other_spacing.preprocessing_hash != base.preprocessing_hash
    assert nearest.preprocessing_hash != base.preprocessing_hash
    path = save_plan(base, tmp_path / "plans.json")
    loaded = load_plan(path)
    assert loaded == base
    edited = json.loads(path.read_text())
    edited["configurations"]["3d_fullres"]["target_spacing"] = [2.0, 2.0, 2.0]
    path.write_text(json.dumps(edited))
    assert load_plan(path).preprocessing_identity("3d") != base.preprocessing_identity("3d")


def test_plan_dataset_writes_plan_and_fingerprint(tmp_path):
    root = make_msd(tmp_path / "ds", cases=2)
    plan = plan_dataset(root, output=tmp_path / "work" / "plans.json", workers=1, progress=False)
    assert (tmp_path / "work" / "fingerprint.json").is_file()
    assert load_plan(tmp_path / "work" / "plans.json").preprocessing_hash == plan.preprocessing_hash


def test_cli_plan_prints_choices_and_writes_json(tmp_path, monkeypatch):
    monkeypatch.setattr(console, "_width", 250)
    root = make_msd(tmp_path / "ds", cases=2)
    app = typer.Typer()
    register(app)
    out = tmp_path / "p" / "plans.json"
    result = CliRunner().invoke(app, ["plan", str(root), "--device", "gpu-8gb", "--gpu-memory-gb", "4", "-o", str(out), "--set", "plan.seed=5", "-j", "1"])
    assert result.exit_code == 0, result.output
    assert "target spacing" in result.output and "3d_fullres network" in result.output and "planned for" in result.output
    plan = json.loads(out.read_text())
    assert plan["planned_for"]["memory_gb"] == 4 and plan["preprocessing"]["seed"] == 5
    assert "config overrides" not in result.output  # nothing in the config replaces a planned value


def test_cli_plan_names_the_config_values_that_replace_planned_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(console, "_width", 400)
    root = make_msd(tmp_path / "ds", cases=2)
    app = typer.Typer()
    register(app)
    args = ["plan", str(root), "-o", str(tmp_path / "plans.json"), "-j", "1", "--set", "train.patch_size=[32,32,16]", "--set", "model.base_features=12"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "config overrides" in result.output and "train.patch_size = [32, 32, 16], model.base_features = 12" in result.output

"""MSD Task04 Hippocampus (shared real data, 182 cases): check, plan and preprocess end to end."""

from __future__ import annotations

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from medseg.cli.dataset_cmds import register
from medseg.data.cache import cached_case_ids, load_case, preprocess_dataset
from medseg.data.check import check_dataset
from medseg.data.dataset import load_dataset, read_case_label
from medseg.data.plan import plan_dataset
from tests.data.reference_inverse import invert_to_raw


@pytest.fixture(scope="module")
def hippocampus(shared_data):
    root = shared_data / "msd_hippocampus"
    if not (root / "dataset.json").is_file():
        pytest.skip(f"msd_hippocampus not found under {shared_data}")
    return root


@pytest.fixture(scope="module")
def plan(hippocampus, tmp_path_factory):
    return plan_dataset(hippocampus, output=tmp_path_factory.mktemp("hippo") / "plans.json", workers=2, progress=False)


def test_check_passes(hippocampus):
    problems = check_dataset(hippocampus)
    assert [p for p in problems if p.severity == "error"] == []


def test_plan_is_1mm_isotropic_per_image_zscore_with_a_small_3d_patch(plan):
    assert plan.target_spacing == pytest.approx([1.0, 1.0, 1.0])
    assert plan.fingerprint_summary["num_cases"] == 182
    (norm,) = plan.preprocessing.normalization
    assert norm.modality == "MR" and norm.scheme == "zscore" and norm.use_nonzero_mask is False
    three_d = plan.configuration("3d")
    assert three_d.name == "3d_fullres"  # the patch covers the whole median case on any machine: no 3d_lowres
    assert three_d.patch_size == [40, 56, 40]  # nnU-Net's choice for Task04 (its axes transposed)
    assert 2 <= three_d.batch_size <= 16
    assert three_d.estimated_memory_gb <= 8
    assert plan.labels == {0: "background", 1: "Anterior", 2: "Posterior"}


def test_preprocess_subset_and_invert_exactly(hippocampus, plan, tmp_path):
    description = load_dataset(hippocampus)
    ids = [case.case_id for case in description.cases[:10]]
    report = preprocess_dataset(description, plan, tmp_path / "cache", workers=2, case_ids=ids, progress=False)
    assert not report.failed and sorted(report.processed) == sorted(ids)
    assert cached_case_ids(tmp_path / "cache") == sorted(ids)
    for case in description.cases[:3]:
        image, seg, props = load_case(tmp_path / "cache", case.case_id)
        assert image.shape[0] == 1 and abs(float(np.mean(image))) < 1e-3
        raw = read_case_label(case).array
        assert np.array_equal(invert_to_raw(np.asarray(seg), props.geometry, "label_linear"), raw)


def test_cli_check_and_plan_on_real_data(hippocampus, tmp_path):
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    assert runner.invoke(app, ["dataset", "check", str(hippocampus)]).exit_code == 0
    result = runner.invoke(app, ["plan", str(hippocampus), "-o", str(tmp_path / "plans.json")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "fingerprint.json").is_file()


@pytest.mark.slow
def test_preprocess_all_cases(hippocampus, plan, tmp_path):
    description = load_dataset(hippocampus)
    report = preprocess_dataset(description, plan, tmp_path / "cache", workers=2, progress=False)
    assert not report.failed and len(report.processed) == 182
    rerun = preprocess_dataset(description, plan, tmp_path / "cache", workers=2, progress=False)
    assert rerun.processed == [] and len(rerun.skipped) == 182

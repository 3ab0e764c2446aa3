"""The evaluate() API: case matching, grid checks, label sources, aggregates and written outputs."""

import json

import numpy as np
import pytest

from medseg.errors import ConfigError, InputError
from medseg.io import write_volume
from medseg.io.volume import Volume
from medseg.metrics import EvaluateConfig, evaluate
from medseg.metrics.aggregate import describe
from medseg.metrics.labels import load_label_specs
from medseg.metrics.outputs import read_csv

AFFINE = np.diag([0.9, 0.9, 2.5, 1.0])


def _pair(rng, shape=(24, 20, 12)):
    ref = np.zeros(shape, np.uint8)
    ref[4:14, 4:14, 2:8] = 1
    ref[15:20, 10:18, 3:9] = 2
    ref[2:4, 15:18, 9:11] = 3
    pred = ref.copy()
    pred[4:6, 4:14, 2:8] = 0
    noise = rng.random(shape) < 0.01
    pred[noise & (ref == 0)] = 2  # scattered false-positive tumour voxels
    return pred, ref


def _write_cases(tmp_path, rng, ids=("a", "b", "c"), suffix=".nii.gz"):
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir(exist_ok=True)
    ref_dir.mkdir(exist_ok=True)
    for case in ids:
        pred, ref = _pair(rng)
        write_volume(Volume(pred, AFFINE, "label"), pred_dir / f"{case}{suffix}")
        write_volume(Volume(ref, AFFINE, "label"), ref_dir / f"{case}{suffix}")
    return pred_dir, ref_dir


def test_folders_matched_by_case_id_and_outputs_written(tmp_path, rng):
    pred_dir, ref_dir = _write_cases(tmp_path, rng)
    (ref_dir / "notes.txt").write_text("not a volume")  # ignored
    labels = {"1": "liver", "2": "tumor", "3": "spleen"}
    result = evaluate(pred_dir, ref_dir, labels=labels, lesion_labels=["tumor"], out_dir=tmp_path / "out", progress=False)
    assert result.summary["case_ids"] == ["a", "b", "c"]
    assert len(result.cases) == 9
    files = {path.name for path in result.files}
    assert files == {"summary.json", "cases.csv", "lesions.csv"}
    rows = read_csv(tmp_path / "out" / "cases.csv")
    assert len(rows) == 9 and rows[0]["label"] == "liver"
    assert float(rows[0]["dice"]) == pytest.approx(2 * 480 / (600 + 480))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["metrics"]["liver"]["dice"]["n"] == 3
    assert "lesion_sensitivity" in summary["metrics"]["tumor"] and "lesion_sensitivity" not in summary["metrics"]["liver"]
    assert summary["lesions"]["tumor"]["fp"] > 0  # the noise voxels are false-positive lesions
    assert summary["config"]["tolerance_mm"] == 1.0 and "empty_distance_cap" in summary["conventions"]
    lesion_rows = read_csv(tmp_path / "out" / "lesions.csv")
    assert {row["source"] for row in lesion_rows} == {"ref", "pred"}
    assert result.values("dice", "liver").shape == (3,)
    assert set(result.mean("dice")) == {"liver", "tumor", "spleen"}


def test_missing_cases_reported(tmp_path, rng):
    pred_dir, ref_dir = _write_cases(tmp_path, rng)
    (pred_dir / "c.nii.gz").unlink()
    with pytest.raises(InputError, match=r"1 reference case\(s\) have no prediction: c"):
        evaluate(pred_dir, ref_dir, progress=False)
    result = evaluate(pred_dir, ref_dir, config=EvaluateConfig(on_missing="skip"), progress=False)
    assert result.summary["case_ids"] == ["a", "b"] and result.summary["missing"]["reference_only"] == ["c"]


def test_no_common_case_and_folder_vs_file(tmp_path, rng):
    pred_dir, ref_dir = _write_cases(tmp_path, rng, ids=("x",))
    other = tmp_path / "other"
    other.mkdir()
    write_volume(Volume(np.zeros((4, 4, 4), np.uint8), AFFINE, "label"), other / "y.nii.gz")
    with pytest.raises(InputError, match="no case id in common"):
        evaluate(pred_dir, other, progress=False)
    with pytest.raises(InputError, match="two folders or two files"):
        evaluate(pred_dir, ref_dir / "x.nii.gz", progress=False)


def test_grid_mismatch_names_both(tmp_path, rng):
    pred, ref = _pair(rng)
    write_volume(Volume(pred, np.diag([1.0, 0.9, 2.5, 1.0]), "label"), tmp_path / "p.nii.gz")
    write_volume(Volume(ref, AFFINE, "label"), tmp_path / "r.nii.gz")
    with pytest.raises(InputError) as error:
        evaluate(tmp_path / "p.nii.gz", tmp_path / "r.nii.gz", progress=False)
    assert "prediction r" in str(error.value) and "reference r" in str(error.value) and "spacing" in str(error.value)


def test_single_files_and_in_memory_volumes_agree(tmp_path, rng):
    pred, ref = _pair(rng)
    write_volume(Volume(pred, AFFINE, "label"), tmp_path / "p.nrrd")
    write_volume(Volume(ref, AFFINE, "label"), tmp_path / "r.nrrd")
    from_files = evaluate(tmp_path / "p.nrrd", tmp_path / "r.nrrd", progress=False)
    in_memory = evaluate(Volume(pred, AFFINE, "label"), Volume(ref, AFFINE, "label"), progress=False)
    assert [row["dice"] for row in from_files.cases] == [row["dice"] for row in in_memory.cases]
    assert from_files.summary["case_ids"] == ["r"]


def test_inferred_labels_fill_absent_ones_as_both_empty(tmp_path, rng):
    pred_dir, ref_dir = _write_cases(tmp_path, rng, ids=("a", "b"))
    only_one = np.zeros((24, 20, 12), np.uint8)
    only_one[1:3, 1:3, 1:3] = 7
    write_volume(Volume(only_one, AFFINE, "label"), pred_dir / "c.nii.gz")
    write_volume(Volume(only_one, AFFINE, "label"), ref_dir / "c.nii.gz")
    result = evaluate(pred_dir, ref_dir, lesion_labels=[2], progress=False)
    assert [spec["name"] for spec in result.summary["labels"]] == ["label_1", "label_2", "label_3", "label_7"]
    assert len(result.cases) == 12
    absent = [row for row in result.cases if row["case"] == "a" and row["label"] == "label_7"][0]
    assert absent["empty"] == "both" and absent["dice"] == 1.0 and np.isnan(absent["hd95"])
    lesion_row = [row for row in result.cases if row["case"] == "c" and row["label"] == "label_2"][0]
    assert lesion_row["lesions_ref"] == 0 and lesion_row["lesion_dice"] == 1.0
    with pytest.raises(ConfigError, match="no label names are known"):
        evaluate(pred_dir, ref_dir, lesion_labels=["tumor"], progress=False)


def test_per_label_tolerance(tmp_path, rng):
    pred, ref = _pair(rng)
    volumes = Volume(pred, AFFINE, "label"), Volume(ref, AFFINE, "label")
    labels = {"liver": 1, "tumor": 2}
    result = evaluate(*volumes, labels=labels, tolerance_mm={"liver": 5.0, "default": 0.5}, progress=False)
    tolerances = {row["label"]: row["tolerance_mm"] for row in result.cases}
    assert tolerances == {"liver": 5.0, "tumor": 0.5}
    assert {row["label"]: row["nsd"] for row in result.cases}["liver"] == 1.0  # 2 voxels * 0.9 mm < 5 mm
    with pytest.raises(ConfigError, match="unknown label 'kidney'"):
        evaluate(*volumes, labels=labels, tolerance_mm={"kidney": 1.0}, progress=False)


def test_label_sources(tmp_path):
    msd = tmp_path / "msd.json"
    msd.write_text(json.dumps({"labels": {"0": "background", "1": "Anterior", "2": "Posterior"}}))
    assert [(s.name, s.values) for s in load_label_specs(msd)] == [("Anterior", (1,)), ("Posterior", (2,))]
    nnunet = tmp_path / "model"
    nnunet.mkdir()
    (nnunet / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "edema": 1, "tumor": 2, "whole": [1, 2]}}))
    specs = load_label_specs(nnunet)  # a folder holding dataset.json
    assert [(s.name, s.values) for s in specs] == [("edema", (1,)), ("whole", (1, 2)), ("tumor", (2,))]
    tasks = tmp_path / "label_map.json"
    tasks.write_text(json.dumps({"_source": "x", "total": {"1": "spleen"}, "total_mr": {"1": "liver"}}))
    with pytest.raises(InputError, match="choose one with --label-task"):
        load_label_specs(tasks)
    assert load_label_specs(tasks, task="total_mr")[0].name == "liver"
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"1": "spleen", "2": "kidney"}))
    assert [s.name for s in load_label_specs(flat)] == ["spleen", "kidney"]
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(InputError, match="not a readable JSON"):
        load_label_specs(broken)
    assert load_label_specs([3, 0, 1])[0].name == "label_1"


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(0).normal(0.8, 0.05, 40)
    first = describe(values, 500, 0.95, (7, 1, 2))
    again = describe(values, 500, 0.95, (7, 1, 2))
    other = describe(values, 500, 0.95, (8, 1, 2))
    assert first == again and first["ci_low"] != other["ci_low"]
    assert first["ci_low"] < first["mean"] < first["ci_high"]
    assert first["iqr"] == pytest.approx(np.percentile(values, 75) - np.percentile(values, 25))
    with_nan = describe([1.0, float("nan"), 3.0], 10)
    assert with_nan["n"] == 2 and with_nan["n_nan"] == 1 and with_nan["mean"] == 2.0


def test_worst_cases_listed(tmp_path, rng):
    pred_dir, ref_dir = _write_cases(tmp_path, rng, ids=("good", "bad"))
    pred, ref = _pair(rng)
    pred[pred == 1] = 0
    write_volume(Volume(pred, AFFINE, "label"), pred_dir / "bad.nii.gz")
    result = evaluate(pred_dir, ref_dir, labels={"1": "liver", "2": "tumor", "3": "spleen"}, progress=False)
    worst = result.summary["worst_cases"]
    assert worst["overall"][0]["case"] == "bad"
    assert worst["by_label"]["liver"][0] == {"case": "bad", "dice": 0.0, "hd95": pytest.approx(worst["by_label"]["liver"][0]["hd95"]), "empty": "pred"}

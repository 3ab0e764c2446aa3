"""`medseg evaluate` on a cross-validation run folder: every fold's validation/ predictions, per fold and pooled."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from medseg.cli.evaluate_cmd import register
from medseg.errors import InputError
from medseg.io import write_volume
from medseg.io.volume import Volume
from medseg.metrics.config import EvaluateConfig
from medseg.metrics.evaluate import evaluate

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])
NO_BOOTSTRAP = EvaluateConfig(bootstrap_samples=0)


def organ_dice(case: int) -> float:
    """Case k's prediction misses k of the organ's 6 rows: Dice = 2 (6 - k) / (12 - k)."""
    return 2 * (6 - case) / (12 - case)


def make_cross_validation(root: Path, cases: int = 4, folds: int = 2) -> tuple[Path, Path, Path]:
    """``root/run/fold_<k>/validation/case_<i>.nii.gz`` (case i held out by fold i % folds), the references and a dataset.json."""
    (root / "gt").mkdir(parents=True)
    for case in range(cases):
        reference = np.zeros((12, 12, 6), np.uint8)
        reference[2:8, 2:8, 1:4] = 1
        reference[9:11, 9:11, 2:4] = 2
        prediction = reference.copy()
        prediction[2:2 + case, 2:8, 1:4] = 0
        write_volume(Volume(reference, AFFINE, "label"), root / "gt" / f"case_{case}.nii.gz")
        folder = root / "run" / f"fold_{case % folds}" / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        write_volume(Volume(prediction, AFFINE, "label"), folder / f"case_{case}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "organ": 1, "tumor": 2}}))
    return root / "run", root / "gt", root / "dataset.json"


def test_each_fold_and_the_pool_are_summarised_as_nnunet_does(tmp_path):
    run, gt, labels = make_cross_validation(tmp_path)
    result = evaluate(run, gt, labels, out_dir=tmp_path / "eval", config=NO_BOOTSTRAP, progress=False)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["cases"] == 4 and summary["prediction"] == str(run), "the pooled evaluation is an ordinary one over every fold's cases"
    assert summary["metrics"]["organ"]["dice"]["mean"] == pytest.approx(np.mean([organ_dice(k) for k in range(4)]))
    folds = summary["cross_validation"]["folds"]
    assert list(folds) == ["fold_0", "fold_1"] and folds["fold_0"]["case_ids"] == ["case_0", "case_2"]
    assert folds["fold_1"]["mean"]["organ"]["dice"] == pytest.approx((organ_dice(1) + organ_dice(3)) / 2)
    assert folds["fold_1"]["mean"]["tumor"]["dice"] == 1.0
    assert folds["fold_1"]["foreground_mean"]["dice"] == pytest.approx(((organ_dice(1) + organ_dice(3)) / 2 + 1.0) / 2)
    pooled = summary["cross_validation"]["pooled"]
    assert pooled["cases"] == 4 and pooled["mean"]["organ"]["dice"] == pytest.approx(np.mean([organ_dice(k) for k in range(4)]))
    assert pooled["foreground_mean"]["dice"] == pytest.approx((pooled["mean"]["organ"]["dice"] + 1.0) / 2)
    spread = summary["cross_validation"]["fold_foreground_mean"]["dice"]
    fold_means = [entry["foreground_mean"]["dice"] for entry in folds.values()]
    assert spread["mean"] == pytest.approx(np.mean(fold_means)) and spread["sd"] == pytest.approx(np.std(fold_means, ddof=1))
    assert result.summary["cross_validation"] == summary["cross_validation"]
    table = (tmp_path / "eval" / "cross_validation.md").read_text()
    assert "| fold | cases | Dice organ | Dice tumor | Dice foreground |" in table
    assert f"| fold_1 | 2 | {(organ_dice(1) + organ_dice(3)) / 2:.4f} | 1.0000 |" in table and "| pooled | 4 |" in table
    assert "| mean of folds (SD) | 2 folds |" in table


def test_cli_prints_the_per_fold_table(tmp_path):
    run, gt, labels = make_cross_validation(tmp_path)
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["evaluate", "-p", str(run), "-g", str(gt), "-l", str(labels), "--set", "evaluate.bootstrap_samples=0",
                                      "-o", str(tmp_path / "cv")])
    assert result.exit_code == 0, result.output
    assert "cross-validation" in result.output and "fold_0" in result.output and "pooled" in result.output
    assert (tmp_path / "cv" / "cross_validation.md").is_file() and str(tmp_path / "cv" / "cross_validation.md") in result.output.replace("\n", "")


def test_a_fold_folder_alone_and_folds_without_predictions(tmp_path, caplog):
    """A fold folder (with its checkpoint) is a one-fold cross-validation; a fold trained before medseg wrote validation/
    predictions is left out with a warning."""
    run, gt, labels = make_cross_validation(tmp_path, folds=2)
    (run / "fold_0" / "checkpoint_last.pt").write_bytes(b"")
    single = evaluate(run / "fold_0", gt, labels, config=NO_BOOTSTRAP.model_copy(update={"on_missing": "skip"}), progress=False)
    assert list(single.summary["cross_validation"]["folds"]) == ["fold_0"] and single.summary["cases"] == 2
    assert single.summary["missing"]["reference_only"] == ["case_1", "case_3"]
    (run / "fold_2").mkdir()
    with caplog.at_level(logging.WARNING, logger="medseg.metrics.crossval"):
        result = evaluate(run, gt, labels, config=NO_BOOTSTRAP, progress=False)
    assert "fold_2 hold(s) no validation/ predictions" in caplog.text and list(result.summary["cross_validation"]["folds"]) == ["fold_0", "fold_1"]


def test_folds_that_overlap_or_predictions_without_reference_are_refused(tmp_path):
    run, gt, labels = make_cross_validation(tmp_path)
    (gt / "case_3.nii.gz").unlink()
    with pytest.raises(InputError, match="1 held-out prediction\\(s\\) have no reference .*case_3"):
        evaluate(run, gt, labels, config=NO_BOOTSTRAP, progress=False)
    skipped = evaluate(run, gt, labels, config=NO_BOOTSTRAP.model_copy(update={"on_missing": "skip"}), progress=False)
    assert skipped.summary["cross_validation"]["folds"]["fold_1"]["case_ids"] == ["case_1"]
    (run / "fold_1" / "validation" / "case_0.nii.gz").write_bytes((run / "fold_0" / "validation" / "case_0.nii.gz").read_bytes())
    with pytest.raises(InputError, match="case case_0 is held out by fold_0 too"):
        evaluate(run, gt, labels, config=NO_BOOTSTRAP, progress=False)

"""`medseg report` on the evaluation of a cross-validation run: the per-fold table, and overlays found in each fold's folder."""

from __future__ import annotations

from medseg.metrics.config import EvaluateConfig
from medseg.metrics.evaluate import evaluate
from medseg.report import build_report
from tests.metrics.test_cross_validation import make_cross_validation, organ_dice


def test_report_shows_the_folds_and_finds_each_folds_predictions(tmp_path):
    run, gt, labels = make_cross_validation(tmp_path)
    evaluate(run, gt, labels, out_dir=tmp_path / "eval", config=EvaluateConfig(bootstrap_samples=0), progress=False)
    html = build_report(tmp_path / "eval", tmp_path / "report.html", max_cases=4, progress=False).read_text()
    assert 'id="cross-validation-table"' in html and 'href="#cross-validation"' in html
    table = html[html.index('id="cross-validation-table"'):]
    table = table[: table.index("</table>")]
    assert all(name in table for name in ("fold_0", "fold_1", "pooled", "mean of folds (SD)"))
    assert f"{(organ_dice(1) + organ_dice(3)) / 2:.4f}" in table
    assert "No overlays" not in html and "label maps not found" not in html
    assert html.count('class="case-title"') == 4, "every case's overlay, its prediction taken from its fold's validation/ folder"


def test_an_ordinary_evaluation_has_no_cross_validation_section(tmp_path):
    run, gt, labels = make_cross_validation(tmp_path)
    evaluate(run / "fold_0" / "validation", gt, labels, out_dir=tmp_path / "eval", progress=False,
             config=EvaluateConfig(bootstrap_samples=0, on_missing="skip"))
    html = build_report(tmp_path / "eval", tmp_path / "report.html", max_cases=0, progress=False).read_text()
    assert "cross-validation-table" not in html and 'href="#cross-validation"' not in html

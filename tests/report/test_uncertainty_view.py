"""`medseg report` draws an uncertainty view beside the error overlay when entropy maps sit beside the predictions."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medseg.io import Volume, read_volume, write_volume
from medseg.metrics import evaluate
from medseg.report.builder import build_report
from medseg.report.config import ReportConfig
from medseg.report.overlays import case_panels
from medseg.report.uncertainty import entropy_beside, uncertainty_figure
from tests.report._synthetic import AFFINE, make_evaluation


def _entropy_like(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """High on the predicted structures' edges and where prediction and reference disagree."""
    edges = ndimage.binary_dilation(pred > 0) & ~ndimage.binary_erosion(pred > 0)
    return np.clip(0.3 * edges + 0.6 * (pred != ref), 0, 1).astype(np.float32)


def test_report_shows_the_uncertainty_view_for_cases_with_an_entropy_map(tmp_path):
    synthetic = make_evaluation(tmp_path / "data", cases=("case_a", "case_b"))
    pred = read_volume(synthetic.pred / "case_a.nii.gz", role="label")
    ref = read_volume(synthetic.gt / "case_a.nii.gz", role="label")
    entropy = _entropy_like(pred.array, ref.array)
    path = write_volume(Volume(entropy, AFFINE), synthetic.pred / "case_a_entropy.nii.gz")
    assert entropy_beside(synthetic.pred / "case_a.nii.gz") == path and entropy_beside(synthetic.pred / "case_b.nii.gz") is None
    again = evaluate(synthetic.pred, synthetic.gt, labels=synthetic.labels, progress=False)  # the map is not taken for a case
    assert again.summary["case_ids"] == ["case_a", "case_b"]
    html = build_report(synthetic.eval_dir, tmp_path / "report.html", images=synthetic.images, progress=False).read_text()
    assert html.count('alt="predictive entropy of case') == 1 and 'alt="predictive entropy of case case_a"' in html
    wrong = pred.array != ref.array
    assert "Uncertainty views:" in html and f"Mean entropy where prediction and reference disagree {entropy[wrong].mean():.3f} ({wrong.sum()} voxels)" in html
    plain = build_report(synthetic.eval_dir, tmp_path / "plain.html", images=synthetic.images, max_cases=1, progress=False).read_text()
    assert ("predictive entropy of case" in plain) == ("case-case_a" in plain)


def test_uncertainty_view_is_sampled_in_world_coordinates(tmp_path):
    """An entropy map stored in another voxel order draws exactly like one stored as the labels are."""
    synthetic = make_evaluation(tmp_path / "data", cases=("case_a",), with_images=False)
    pred = read_volume(synthetic.pred / "case_a.nii.gz", role="label")
    ref = read_volume(synthetic.gt / "case_a.nii.gz", role="label")
    entropy = Volume(_entropy_like(pred.array, ref.array), AFFINE)
    config = ReportConfig()
    panels = case_panels(pred, ref, None, {1: "liver", 2: "tumor"}, config)[0]
    same = uncertainty_figure(panels, write_volume(entropy, tmp_path / "same.nii.gz"), pred, config, ref)
    other = uncertainty_figure(panels, write_volume(entropy.reoriented("LPI"), tmp_path / "lpi.nii.gz"), pred, config, ref)
    assert same.uri and same.uri == other.uri and same.note is None
    shifted = Volume(entropy.array, AFFINE @ np.diag([1, 1, 1, 1.0]) + np.pad(np.array([[500.0], [0], [0]]), ((0, 1), (3, 0))))
    far = uncertainty_figure(panels, write_volume(shifted, tmp_path / "far.nii.gz"), pred, config, ref)
    assert far.uri is None and "does not cover" in far.note

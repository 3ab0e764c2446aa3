"""The report of a region-based (BraTS-style) evaluation: overlays per region, the lesion-wise section."""

import json
import re

import numpy as np
import pytest

from medseg.io import write_volume
from medseg.io.volume import Volume
from medseg.metrics import EvaluateConfig, evaluate
from medseg.report import build_report
from medseg.report.config import ReportConfig
from medseg.report.overlays import case_panels, region_code_names, region_codes

SHAPE = (48, 44, 36)
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])
REGIONS = [("whole tumor", [1, 2, 3, 4]), ("tumor core", [1, 3, 4]), ("enhancing tumor", [4])]
LABELS = {"background": 0, "whole tumor": [1, 2, 3, 4], "tumor core": [1, 3, 4], "enhancing tumor": [4]}


def ball(centre, radius: float) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in SHAPE)]
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius**2


def tumour(centre=(22, 20, 17)) -> np.ndarray:
    """BraTS 2015 labels: oedema 2 around a core of necrosis 1, non-enhancing 3 and an enhancing 4 shell."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[ball(centre, 11)] = 2
    labels[ball(centre, 7)] = 4
    labels[ball(centre, 5)] = 1
    labels[ball(np.add(centre, (0, 0, 3)), 2)] = 3
    return labels


def painted(labels: np.ndarray) -> np.ndarray:
    """What region-based inference writes (regions_class_order 2, 1, 4): label 3 becomes 1, regions unchanged."""
    return np.where(labels == 3, 1, labels).astype(np.uint8)


def _panels(reference, prediction):
    ref, pred = Volume(reference, AFFINE, "label"), Volume(prediction, AFFINE, "label")
    names = {value: name for name, values in REGIONS for value in values}
    return case_panels(pred, ref, None, names, ReportConfig(crop_to_foreground=False), REGIONS)


def test_region_codes_give_one_bit_per_region():
    codes = region_codes(np.array([0, 1, 2, 3, 4, 7]), [values for _, values in REGIONS])
    assert codes.tolist() == [0, 0b011, 0b001, 0b011, 0b111, 0]
    assert region_code_names(["whole tumor", "tumor core", "enhancing tumor"])[0b111] == "enhancing tumor"


def test_same_regions_with_other_label_values_is_no_disagreement():
    reference = tumour()
    panels, _, error_ml, pair, _ = _panels(reference, painted(reference))
    assert error_ml == 0.0 and pair is None  # label values differ (3 vs 1) but every region agrees
    assert all(panel.regions == ("whole tumor", "tumor core", "enhancing tumor") for panel in panels)


def test_largest_region_disagreement_and_its_regions():
    reference = tumour()
    prediction = painted(reference)
    prediction[ball((22, 20, 17), 7) & (prediction == 4)] = 1  # enhancing shell predicted as necrosis
    panels, _, error_ml, pair, _ = _panels(reference, prediction)
    expected = int(((reference == 4) & ball((22, 20, 17), 7)).sum())
    assert error_ml == pytest.approx(expected / 1000.0)
    assert pair == ("enhancing tumor", "tumor core")
    axial = panels[0]
    assert ((axial.pred >> 2) & 1).sum() == 0 and ((axial.ref >> 2) & 1).sum() > 0  # ET bit: reference only


@pytest.fixture(scope="module")
def brats_eval(tmp_path_factory):
    """Three cases: one right, one whose small satellite lesion is missed, one with a false-positive blob."""
    root = tmp_path_factory.mktemp("brats")
    for name in ("gt", "pred", "images"):
        (root / name).mkdir()
    rng = np.random.default_rng(3)
    for index in range(3):
        reference = tumour()
        reference[ball((4, 4, 4), 3)] = 2  # a satellite oedema lesion (113 mm^3)
        prediction = painted(reference)
        if index == 1:
            prediction[ball((4, 4, 4), 3)] = 0
        if index == 2:
            prediction[ball((40, 36, 28), 3)] = 2
        flair = (np.where(reference > 0, 2.0, 0.5) + rng.normal(0, 0.1, SHAPE)).astype(np.float32)
        write_volume(Volume(reference, AFFINE, "label"), root / "gt" / f"case{index}.nii.gz")
        write_volume(Volume(prediction, AFFINE, "label"), root / "pred" / f"case{index}.nii.gz")
        write_volume(Volume(flair, AFFINE, "image"), root / "images" / f"case{index}_0000.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"labels": LABELS, "regions_class_order": [2, 1, 4]}))
    config = EvaluateConfig(brats_labels=["all"], bootstrap_samples=100)
    evaluate(root / "pred", root / "gt", labels=root / "dataset.json", out_dir=root / "eval", config=config, progress=False)
    html = build_report(root / "eval", root / "report.html", images=root / "images", progress=False).read_text()
    return root, html


def _table(html: str, table_id: str) -> list[list[str]]:
    body = re.search(rf'<table id="{table_id}".*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    return [[re.sub("<.*?>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def test_region_table_matches_the_summary(brats_eval):
    root, html = brats_eval
    summary = json.loads((root / "eval" / "summary.json").read_text())["brats_lesionwise"]
    rows = {row[0]: row for row in _table(html, "brats-regions")}
    assert list(rows) == ["whole tumor", "tumor core", "enhancing tumor"]
    for name, row in rows.items():
        assert row[-3:] == [str(summary[name]["tp"]), str(summary[name]["fp"]), str(summary[name]["fn"])]
        assert row[2].startswith(f"{summary[name]['lesionwise_dice']:.3f}")
    assert rows["whole tumor"][-3:] == ["5", "1", "1"]  # 6 reference lesions, 1 missed, 1 false positive
    assert re.fullmatch(r"\d\.\d{3}\u2013\d\.\d{3}", rows["whole tumor"][3])  # a bootstrap CI


def test_lesion_table_lists_the_missed_lesion_first(brats_eval):
    _, html = brats_eval
    rows = _table(html, "brats-lesions")
    assert rows[0][0] == "case1" and rows[0][1] == "whole tumor" and rows[0][5] == "missed" and rows[0][6] == "0.000"
    assert all(row[5].startswith("matched") for row in rows[1:])
    fps = _table(html, "brats-false-positives")
    assert [row[:3] for row in fps] == [["case2", "whole tumor", "1"]]


def test_overlays_are_drawn_per_region_on_the_image(brats_eval):
    _, html = brats_eval
    assert html.count('<figure id="case-') == 3
    assert 'href="#brats"' in html and "One colour per region" in html
    assert "whole tumor</b>, " in html  # the legend of region colours in the overlay explanation
    assert "mostly reference whole tumor vs predicted background" in html  # case1's missed satellite


def test_masked_mr_background_is_black_and_out_of_the_window():
    from medseg.report.overlays import display_range, zero_background

    rng = np.random.default_rng(0)
    brain = ball((24, 22, 18), 14)
    zscored = np.where(brain, rng.normal(0, 1, SHAPE), 0.0).astype(np.float32)  # z-scored inside, 0 outside
    image = Volume(zscored, AFFINE, "image")
    low, high, text = display_range(image, ReportConfig())
    assert zero_background(image, ReportConfig()) and "zero background in black" in text
    assert low == pytest.approx(np.percentile(zscored[brain], 1), abs=0.05)
    panels, *_ = case_panels(Volume(np.zeros(SHAPE, np.uint8), AFFINE, "label"), Volume(tumour(), AFFINE, "label"), image,
                             {1: "x"}, ReportConfig(crop_to_foreground=False), REGIONS)
    axial = panels[0]
    corner = axial.grey[0, 0]
    assert corner == 0.0  # outside the brain: black, not the grey of a 0 inside the window
    ct = Volume(np.where(brain, 40.0, -1000.0).astype(np.float32), AFFINE, "image")
    assert not zero_background(ct, ReportConfig())

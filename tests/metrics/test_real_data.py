"""Real TotalSegmentator outputs: our Dice and statistics reproduce the recorded reference values."""

import json

import pytest

from medseg.io import read_volume
from medseg.metrics import evaluate, segmentation_statistics


def test_totalseg_fast_vs_full_dice_matches_reference(shared_file):
    fast = shared_file("totalseg_example/seg_v2_fast/example_seg_fast.nii.gz")
    full = shared_file("totalseg_example/seg_v2/example_seg.nii.gz")
    label_map = shared_file("totalseg_example/label_map.json")
    reference = json.loads(shared_file("totalseg_example/reference_dice_seg_v2_vs_fast.json").read_text())["per_label"]
    result = evaluate(fast, full, labels=label_map, label_task="total", progress=False)
    rows = {row["label"]: row for row in result.cases}
    assert len(rows) == 117
    for name, expected in reference.items():
        row = rows[name]
        assert row["label_index"] == str(expected["label"])
        # the reference file stores Dice rounded to 6 decimals
        assert row["dice"] == pytest.approx(expected["dice"], abs=1e-6), name
        assert row["tp"] == expected["intersection"]
        assert row["tp"] + row["fp"] == expected["voxels_fast"]
        assert row["tp"] + row["fn"] == expected["voxels_reference"]
    absent = [row for name, row in rows.items() if name not in reference]
    assert absent and all(row["empty"] == "both" and row["dice"] == 1.0 for row in absent)
    # lung_middle_lobe_right: 1 voxel in one map only
    assert rows["lung_middle_lobe_right"]["dice"] == 0.0 and rows["lung_middle_lobe_right"]["empty"] in ("pred", "ref")


def test_statistics_match_totalsegmentator_statistics_json(shared_file):
    seg = read_volume(shared_file("totalseg_example/seg_v2_fast/example_seg_fast.nii.gz"), role="label")
    image = read_volume(shared_file("totalseg_example/ct/example_ct_sm.nii.gz"))
    expected = json.loads(shared_file("totalseg_example/seg_v2_fast/per_organ/statistics.json").read_text())
    statistics = segmentation_statistics(seg, image, shared_file("totalseg_example/label_map.json"), label_task="total")
    for name, values in expected.items():
        facts = statistics["structures"][name]
        assert facts["volume_ml"] * 1000 == pytest.approx(values["volume"], abs=1e-6), name  # TotalSegmentator: mm^3
        if facts["voxels"]:
            assert facts["intensity"]["mean"] == pytest.approx(values["intensity"], abs=1e-4), name
    liver = statistics["structures"]["liver"]
    assert 30 < liver["intensity"]["median"] < 70  # plausible HU for contrast CT liver
    low, high = liver["bbox_mm"]["min"], liver["bbox_mm"]["max"]
    assert all(a <= c <= b for a, c, b in zip(low, liver["centroid_mm"], high))

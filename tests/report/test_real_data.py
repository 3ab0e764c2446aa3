"""The committed example: agreement between TotalSegmentator v2 and v2 --fast on the real example CT."""

import re

from medseg.metrics import evaluate
from medseg.report import build_report


def test_totalseg_example_report(shared_file, tmp_path):
    fast = shared_file("totalseg_example/seg_v2_fast/example_seg_fast.nii.gz")
    full = shared_file("totalseg_example/seg_v2/example_seg.nii.gz")
    labels = shared_file("totalseg_example/label_map.json")
    image = shared_file("totalseg_example/ct/example_ct_sm.nii.gz")
    evaluate(fast, full, labels=labels, label_task="total", out_dir=tmp_path / "eval", progress=False)
    out = build_report(tmp_path / "eval", tmp_path / "report.html", images=image, title="Agreement between two TotalSegmentator models", progress=False)
    html = out.read_text()
    overlap = re.search(r'<table id="per-label-overlap".*?</table>', html, re.S).group(0)
    assert overlap.count('<td class="label">') == 41  # the 41 labels present in either map; 76 absent ones hidden
    assert re.search(r'>liver</td><td class="num">5</td><td class="num">1/1</td><td class="num"></td>\s*<td class="num first"[^>]*>0\.981<', overlap)
    # 1 voxel in the reference only: Dice 0, flagged as 'one map empty'
    assert re.search(r'>lung_middle_lobe_right</td><td class="num">13</td><td class="num">1/1</td><td class="num">1</td>\s*<td class="num first"[^>]*>0\.000<', overlap)
    assert html.count('<figure id="case-') == 1 and "CT window W400/L40 HU" in html
    text = re.sub(r"data:image/png;base64,[^\"]+", "", html)
    assert str(fast.parent.parent) not in text and "/" + fast.resolve().parts[1] + "/" not in text  # no input path
    assert out.stat().st_size < 1_500_000

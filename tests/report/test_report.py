"""build_report on a synthetic evaluation: contents, self-containment, privacy of paths, options."""

import re

import pytest
import yaml

from medseg.errors import ConfigError, InputError
from medseg.report import ReportConfig, build_report

DATA_URI = '<img src="data:image/png;base64,'


def _table(html: str, table_id: str) -> str:
    match = re.search(rf'<table id="{table_id}".*?</table>', html, re.S)
    assert match, f"no table {table_id}"
    return match.group(0)


def test_report_contents(synthetic, tmp_path):
    out = build_report(synthetic.eval_dir, tmp_path / "report.html", images=synthetic.images, progress=False)
    html = out.read_text()
    overlap, distance = _table(html, "per-label-overlap"), _table(html, "per-label-distance")
    # per-label tables with CI columns; the label absent everywhere (spleen) is hidden
    assert overlap.count("95% CI") == 3 and distance.count("95% CI") == 4
    assert ">liver<" in overlap and ">tumor<" in overlap and "spleen" not in overlap
    assert "1 label(s) not listed" in html
    # the CI of the mean Dice of liver from summary.json, formatted
    import json

    stats = json.loads((synthetic.eval_dir / "summary.json").read_text())["metrics"]["liver"]["dice"]
    assert f"{stats['ci_low']:.3f}\u2013{stats['ci_high']:.3f}" in overlap
    # lesion detection: pooled counts of the synthetic design (8 lesions, 1 missed, 1 false positive)
    lesions = _table(html, "lesion-detection")
    assert re.search(r">tumor</td><td class=\"num\">4</td><td class=\"num\">8</td><td class=\"num\">8</td><td class=\"num\">7</td><td class=\"num\">1</td><td class=\"num\">1</td>", lesions)
    assert "87.5%" in lesions
    assert 'id="plot-size-bins"' in html and 'id="missed-lesions"' in html and 'id="false-positive-lesions"' in html
    # inline images: 6 metric plots + size-bin plot + 4 case overlays, nothing external
    assert html.count(DATA_URI) == 6 + 1 + 4
    assert not re.search(r"https?://", html)
    assert "<script" not in html and "<link" not in html
    # no input paths by default (only case ids)
    assert str(synthetic.root) not in html and str(tmp_path) not in html
    assert "case_b" in html
    # worst cases link to overlays, worst first: case_b misses a lesion
    worst = _table(html, "worst-cases")
    assert 'href="#case-case_b"' in worst and 'id="case-case_b"' in html
    assert html.index('id="case-case_b"') < html.index('id="case-case_a"')
    assert "CT window W400/L40 HU" in html
    assert "Radiological convention" in html


def test_max_cases_limits_overlays_and_unlinked_worst_cases(synthetic, tmp_path):
    html = build_report(synthetic.eval_dir, tmp_path / "r.html", images=synthetic.images, max_cases=1, progress=False).read_text()
    assert html.count('<figure id="case-') == 1 and 'id="case-case_b"' in html
    assert "The 1 worst of 4 cases" in html
    worst = _table(html, "worst-cases")
    assert 'href="#case-case_b"' in worst and 'href="#case-case_a"' not in worst and ">case_a<" in worst


def test_without_images_draws_masks_only(synthetic, tmp_path):
    html = build_report(synthetic.eval_dir, tmp_path / "r.html", max_cases=2, progress=False).read_text()
    assert html.count('<figure id="case-') == 2
    assert "no image, reference structures in grey" in html


def test_moved_label_maps_note_and_override(synthetic, tmp_path):
    import shutil

    eval_copy = tmp_path / "eval"
    shutil.copytree(synthetic.eval_dir, eval_copy)
    summary = (eval_copy / "summary.json").read_text().replace(str(synthetic.pred), str(tmp_path / "gone"))
    (eval_copy / "summary.json").write_text(summary)
    html = build_report(eval_copy, tmp_path / "a.html", progress=False).read_text()
    assert "No overlays" in html and "pass --pred and --gt" in html and DATA_URI in html  # plots still there
    assert '<figure id="case-' not in html
    html = build_report(eval_copy, tmp_path / "b.html", pred=synthetic.pred, max_cases=1, progress=False).read_text()
    assert html.count('<figure id="case-') == 1


def test_model_summary_from_run_folder(synthetic, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    config = {"dataset": str(tmp_path / "secret_hospital" / "Task09_Liver"), "model": {"name": "dynunet", "base_features": 8}, "plan": {"target_spacing": [1.5, 1.5, 3.0]}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "summary.json").write_text('{"epochs": 3, "best_ema_dice": 0.81, "final_validation": {"liver": 0.9}}')
    html = build_report(synthetic.eval_dir, tmp_path / "r.html", model=run, max_cases=0, progress=False).read_text()
    model = _table(html, "model-summary")
    assert "dynunet" in model and "1.5 x 1.5 x 3" in model and "0.81" in model and "liver 0.9" in model
    assert "Task09_Liver" in model and "secret_hospital" not in html  # dataset path reduced to its name
    html = build_report(synthetic.eval_dir, tmp_path / "p.html", model=run, max_cases=0, include_phi=True, progress=False).read_text()
    assert str(tmp_path / "secret_hospital") in html


def test_model_summary_from_checkpoint(synthetic, tmp_path):
    pytest.importorskip("torch")
    from medseg.config.schema import RunConfig
    from medseg.schema import ValidationScores
    from medseg.train.checkpoint import save_checkpoint
    from tests.schema._builders import tiny_payload

    checkpoint = tmp_path / "checkpoint_best.pt"
    payload = tiny_payload(epoch=42).model_copy(update={"config": RunConfig(model={"name": "segresnet"}).model_dump(mode="json"),
                                                         "validation": ValidationScores(dice={"1": 0.875}, mean_dice=0.875)})
    save_checkpoint(checkpoint, payload)
    html = build_report(synthetic.eval_dir, tmp_path / "r.html", model=checkpoint, max_cases=0, progress=False).read_text()
    model = _table(html, "model-summary")
    assert "segresnet" in model and ">42<" in model and "0.875" in model and "1: class_1" in model
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable medseg checkpoint"):
        build_report(synthetic.eval_dir, tmp_path / "r2.html", model=tmp_path / "junk.pt", max_cases=0, progress=False)


def test_bad_inputs(synthetic, tmp_path):
    with pytest.raises(InputError, match="not an evaluation folder"):
        build_report(tmp_path, tmp_path / "r.html", progress=False)
    with pytest.raises(InputError, match="does not exist"):
        build_report(tmp_path / "nope", tmp_path / "r.html", progress=False)
    with pytest.raises(InputError, match="single image but the evaluation has 4 cases"):
        build_report(synthetic.eval_dir, tmp_path / "r.html", images=next(synthetic.images.iterdir()), progress=False)
    with pytest.raises(ConfigError, match="max_cases"):
        build_report(synthetic.eval_dir, tmp_path / "r.html", max_cases=-1, progress=False)
    with pytest.raises(ValueError, match="unknown metric"):
        ReportConfig(plot_metrics=["dice", "accuracy"])
    assert not (tmp_path / "r.html").exists()


def test_html_escapes_user_text(synthetic, tmp_path):
    html = build_report(synthetic.eval_dir, tmp_path / "r.html", title="<b>x</b> & y", notes=["<script>alert(1)</script>"], max_cases=0, progress=False).read_text()
    assert "<script>alert" not in html and "&lt;script&gt;" in html and "&lt;b&gt;x&lt;/b&gt; &amp; y" in html

"""`medseg demo` end to end on a small synthetic set with a short training budget."""

import pytest

from medseg.demo import STAGES, DemoSettings, run_demo


@pytest.mark.integration
def test_demo_runs_every_stage(tmp_path):
    finished = []
    state = run_demo(DemoSettings(out_dir=tmp_path / "demo", cases=5, test_cases=1, train_minutes=0.3),
                     on_stage=lambda name, summary, seconds: finished.append((name, summary)))
    assert [name for name, _ in finished] == [name for name, _ in STAGES]
    out = tmp_path / "demo"
    assert (out / "io" / "from_dicom.nrrd").is_file()
    assert (state.run_dir / "checkpoint_best.pt").is_file() and (state.run_dir / "training_curves.png").is_file()
    predictions = sorted((out / "predictions").glob("*.nii.gz"))
    assert len(predictions) == 1 and predictions[0].with_name(predictions[0].name.replace(".nii.gz", ".json")).is_file()
    assert (out / "evaluation" / "summary.json").is_file()
    html = (out / "report.html").read_text()
    assert "liver" in html and "data:image/png;base64" in html

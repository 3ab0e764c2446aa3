"""`medseg bench infer` end to end on a small synthetic CT (slow: one subprocess per pipeline run)."""

from __future__ import annotations

import json

import pytest

from medseg.bench.infer import bench_infer, build_benchmark_checkpoint, synthetic_ct
from medseg.infer.model import load_model
from medseg.io import read_volume


def test_benchmark_checkpoint_and_synthetic_ct(tmp_path):
    model = load_model(build_benchmark_checkpoint(tmp_path / "model.pt", classes=4, base_features=4, max_features=16))
    assert model.num_classes == 4 and model.patch_size == (96, 96, 96) and model.configuration.grid_spacing() == [3.0, 3.0, 3.0]
    ct = read_volume(synthetic_ct(tmp_path / "ct.nii.gz", shape=(40, 30, 20), spacing=(12.0, 12.0, 15.0)))  # whole body in view
    assert ct.shape == (40, 30, 20) and ct.orientation == "LPS" and ct.array.min() < -900 and ct.array.max() > 300


@pytest.mark.slow
def test_bench_infer_writes_json_and_markdown(tmp_path):
    out = tmp_path / "bench.json"
    result = bench_infer(None, [], synthetic_shape=(128, 128, 64), out_json=out, classes=3, work_dir=tmp_path / "work",
                         peers=["monai", "monai-expert"])
    (row,) = [row for row in result["cases"] if row["input"].startswith("synthetic")]
    assert row["medseg"]["seconds"] > 0 and row["monai"]["peak_rss_mb"] > 0 and row["monai-expert"]["seconds"] > 0
    assert set(row["ratios"]) == {"monai", "monai-expert"} and row["ratios"]["monai-expert"]["agreement_dice"] >= 0
    assert json.loads(out.read_text())["cases"][-1]["input"] == row["input"]
    assert "peer time / medseg time" in out.with_suffix(".md").read_text()


def test_bench_infer_refuses_bad_settings_and_nothing_to_time(tmp_path, monkeypatch):
    from medseg.errors import ConfigError
    from medseg.bench import infer as bench

    with pytest.raises(ConfigError, match="amp must be one of off, bf16"):
        bench.bench_infer(amp="fp8", synthetic=False, out_json=tmp_path / "out.json")
    with pytest.raises(ConfigError, match="--peer must be one of"):
        bench.bench_infer(peers=["nnunet"], synthetic=False, out_json=tmp_path / "out.json")
    monkeypatch.setenv("MEDSEG_TEST_DATA", str(tmp_path / "no_data_here"))
    with pytest.raises(ConfigError, match="nothing to time"):
        bench.bench_infer(synthetic=False, out_json=tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()

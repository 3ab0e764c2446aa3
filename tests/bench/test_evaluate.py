"""The evaluation benchmark runs and records its timing and machine (targets are judged in reports/, not here)."""

import json

import pytest

from medseg.bench.evaluate import bench_evaluate, synthetic_case


def test_bench_small_case_writes_json(tmp_path):
    result = bench_evaluate(shape=(96, 96, 60), spacing=(4.0, 4.0, 7.5), repeats=1, out_json=tmp_path / "bench.json")
    stored = json.loads((tmp_path / "bench.json").read_text())
    assert stored["labels"] == 10 and stored["seconds_best"] > 0 and stored["machine"]["cores"] >= 1
    assert len(result["dice"]) == 10 and result["dice"]["liver"] > 0.8
    assert result["lesions"]["ref"] >= 1


def test_synthetic_case_has_all_labels():
    pred, ref, specs = synthetic_case((64, 64, 40), (6.4, 6.4, 11.25))
    assert len(specs) == 10 and pred.same_grid(ref)


@pytest.mark.slow
def test_full_size_case_with_io(tmp_path):
    result = bench_evaluate(repeats=1, with_io=True, out_json=tmp_path / "bench.json")
    assert result["shape"] == [512, 512, 300] and result["labels"] == 10
    assert result["seconds_best"] > 0 and result["seconds_with_io"] >= result["seconds_best"]

"""The CPU engine timing tool runs end to end and reports every engine asked for."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("onnxruntime", reason="the optional onnx extra is not installed (pip install medseg[onnx])")


@pytest.mark.slow
def test_bench_times_eager_and_onnxruntime(tmp_path, capsys):
    # Slow: exports and times a 40x56x40 DynUNet of 32 base features (~30 s on 2 cores).
    from medseg.bench.onnx import main

    main(["--settings", "hippocampus", "--repeats", "1", "--threads", "1", "--engines", "eager", "onnxruntime", "--json", str(tmp_path / "t.json")])
    rows = json.loads((tmp_path / "t.json").read_text())
    assert [row["engine"] for row in rows] == ["eager", "onnxruntime"]
    assert all(row["seconds_per_window"] > 0 for row in rows) and rows[1]["argmax_agreement"] > 0.999
    assert "| hippocampus | onnxruntime |" in capsys.readouterr().out

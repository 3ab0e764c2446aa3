"""`medseg bench` groups every benchmark in one place and forwards its options."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from medseg.cli import bench_cmd


def _app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    bench_cmd.register(app)
    return app


def test_bench_evaluate_forwards_its_options(tmp_path, monkeypatch):
    from medseg.bench import evaluate

    calls = {}

    def fake(**kwargs):
        calls.update(kwargs)
        return {"shape": [8, 8, 8], "labels": 10, "seconds_best": 0.1, "seconds_with_io": 0.2}

    monkeypatch.setattr(evaluate, "bench_evaluate", fake)
    result = CliRunner().invoke(_app(), ["bench", "evaluate", "--repeats", "1", "-o", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert calls["repeats"] == 1 and calls["with_io"] is True and "0.10 s in memory" in result.output


def test_every_benchmark_is_a_subcommand():
    result = CliRunner().invoke(_app(), ["bench", "--help"])
    assert result.exit_code == 0
    for name in ("train", "infer", "evaluate", "gpu"):
        assert name in result.output

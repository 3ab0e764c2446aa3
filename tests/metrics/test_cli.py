"""`medseg evaluate` and `medseg stats` through typer, on a tiny synthetic pair."""

import json

import numpy as np
import typer
from typer.testing import CliRunner

from medseg.cli.evaluate_cmd import register
from medseg.errors import InputError
from medseg.io import write_volume
from medseg.io.volume import Volume

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _files(tmp_path):
    ref = np.zeros((16, 16, 8), np.uint8)
    ref[3:10, 3:10, 2:6] = 1
    ref[12:14, 12:14, 3:5] = 2
    pred = ref.copy()
    pred[3, 3:10, 2:6] = 0
    write_volume(Volume(pred, AFFINE, "label"), tmp_path / "pred.nii.gz")
    write_volume(Volume(ref, AFFINE, "label"), tmp_path / "ref.nii.gz")
    write_volume(Volume(np.where(ref > 0, 40, -900).astype(np.int16), AFFINE, "image"), tmp_path / "ct.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "organ": 1, "tumor": 2}}))


def test_evaluate_command(tmp_path):
    _files(tmp_path)
    args = ["evaluate", "--pred", str(tmp_path / "pred.nii.gz"), "--gt", str(tmp_path / "ref.nii.gz"), "--labels", str(tmp_path / "dataset.json")]
    args += ["--lesion-labels", "tumor", "--tolerance", "organ=2", "--set", "evaluate.bootstrap_samples=0", "-o", str(tmp_path / "eval")]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert "organ" in result.output and "tumor: 1/1 lesions found" in result.output
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["config"]["bootstrap_samples"] == 0 and summary["config"]["label_tolerance_mm"] == {"organ": 2.0}
    assert summary["metrics"]["organ"]["dice"]["mean"] == 2 * 6 / 13
    assert (tmp_path / "eval" / "cases.csv").is_file() and (tmp_path / "eval" / "lesions.csv").is_file()


def test_evaluate_command_bad_input_raises_input_error(tmp_path):
    _files(tmp_path)
    result = CliRunner().invoke(_app(), ["evaluate", "-p", str(tmp_path / "nope.nii.gz"), "-g", str(tmp_path / "ref.nii.gz"), "-o", str(tmp_path / "e")])
    assert isinstance(result.exception, InputError)  # main.py turns it into one 'error:' line


def test_stats_command(tmp_path):
    _files(tmp_path)
    args = ["stats", str(tmp_path / "ref.nii.gz"), "--image", str(tmp_path / "ct.nii.gz"), "-l", str(tmp_path / "dataset.json")]
    result = CliRunner().invoke(_app(), args + ["--lesion-labels", "tumor", "-o", str(tmp_path / "stats.json")])
    assert result.exit_code == 0, result.output
    statistics = json.loads((tmp_path / "stats.json").read_text())
    assert statistics["structures"]["organ"]["intensity"]["mean"] == 40.0
    assert statistics["structures"]["organ"]["volume_ml"] == 7 * 7 * 4 * 2 / 1000
    assert len(statistics["lesions"]["tumor"]) == 1


def test_help_teaches_with_examples():
    result = CliRunner().invoke(_app(), ["evaluate", "--help"])
    assert result.exit_code == 0 and "Examples" in result.output and "--lesion-labels" in result.output


def test_config_file_and_bad_override(tmp_path):
    from medseg.errors import ConfigError

    _files(tmp_path)
    (tmp_path / "eval.yaml").write_text("evaluate:\n  lesion_match_dilation_voxels: 2\n  seed: 3\n")
    base = ["evaluate", "-p", str(tmp_path / "pred.nii.gz"), "-g", str(tmp_path / "ref.nii.gz"), "-o", str(tmp_path / "e")]
    result = CliRunner().invoke(_app(), base + ["--config", str(tmp_path / "eval.yaml"), "--set", "evaluate.seed=4"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "e" / "summary.json").read_text())["config"]
    assert config["lesion_match_dilation_voxels"] == 2 and config["seed"] == 4
    result = CliRunner().invoke(_app(), base + ["--set", "evaluate.tolerance=2"])
    assert isinstance(result.exception, ConfigError) and "valid keys" in str(result.exception)

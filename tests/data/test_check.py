"""`check_dataset` lists every problem at once; the CLI shows them and exits non-zero on errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from medseg.cli.dataset_cmds import register
from medseg.data.check import check_dataset, has_errors
from medseg.logging_setup import console
from tests.data._builders import BROKEN, make_broken, make_msd, make_msd_4d, phantom, ras_affine, save_nifti, store_as


@pytest.fixture
def app():
    application = typer.Typer()
    register(application)
    return application


@pytest.fixture
def wide_console(monkeypatch):
    monkeypatch.setattr(console, "_width", 250)


def test_clean_dataset_has_no_problems(tmp_path):
    root = make_msd(tmp_path / "ds", cases=3, orientations=["RAS", "LPS", "PSR"])
    assert check_dataset(root) == []


def test_broken_dataset_lists_every_problem(tmp_path):
    problems = check_dataset(make_broken(tmp_path / "broken"))
    found = {(problem.case, problem.check) for problem in problems if problem.severity == "error"}
    for case, check in BROKEN.items():
        assert (case, check) in found, f"{check} of {case} not reported; got {sorted(found)}"
    assert not any(problem.case == "case_005" for problem in problems)  # the good case stays clean
    undeclared = next(p for p in problems if p.check == "undeclared_label")
    assert "[7]" in undeclared.message
    missing = next(p for p in problems if p.check == "missing_label")
    assert missing.path.endswith("case_002.nii.gz")
    assert has_errors(problems)


def test_float_and_empty_labels_are_warnings_only(tmp_path):
    root = make_msd(tmp_path / "ds", cases=2)
    _, label = phantom()
    save_nifti(label.astype(np.float32), ras_affine(origin=(0.0, -5.0, 3.0)), root / "labelsTr" / "case_000.nii.gz")
    save_nifti(np.zeros_like(label), ras_affine(origin=(10.0, -5.0, 3.0)), root / "labelsTr" / "case_001.nii.gz")
    problems = check_dataset(root)
    assert {(p.case, p.check, p.severity) for p in problems} == {("case_000", "float_label", "warning"), ("case_001", "empty_label", "warning")}
    assert not has_errors(problems)


def test_label_in_another_orientation_is_a_warning(tmp_path):
    root = make_msd(tmp_path / "ds", cases=1)
    _, label = phantom()
    stored, affine = store_as(label, ras_affine(origin=(0.0, -5.0, 3.0)), "PSR")
    save_nifti(stored, affine, root / "labelsTr" / "case_000.nii.gz")
    problems = check_dataset(root)
    assert [(p.check, p.severity) for p in problems] == [("orientation_differs", "warning")]


def test_unreadable_file_and_wrong_channel_count_are_problems_not_crashes(tmp_path):
    root = make_msd_4d(tmp_path / "brain", cases=2)
    (root / "imagesTr" / "BRATS_000.nii.gz").write_bytes(b"\x1f\x8b garbage that is not gzip")
    image, _ = phantom((16, 14, 10), "MR")
    save_nifti(np.stack([image] * 3, axis=-1), ras_affine(), root / "imagesTr" / "BRATS_001.nii.gz")
    problems = check_dataset(root)
    checks = {(p.case, p.check) for p in problems}
    assert ("BRATS_000", "unreadable") in checks
    assert ("BRATS_001", "channel_count") in checks


def test_missing_dataset_json_is_one_problem(tmp_path):
    (tmp_path / "empty").mkdir()
    problems = check_dataset(tmp_path / "empty")
    assert [p.check for p in problems] == ["dataset_json"]


def test_cli_check_broken_dataset_shows_all_problems_and_fails(tmp_path, app, wide_console):
    root = make_broken(tmp_path / "broken")
    result = CliRunner().invoke(app, ["dataset", "check", str(root)])
    assert result.exit_code == 1, result.output
    for case, check in BROKEN.items():
        assert case in result.output and check in result.output


def test_cli_check_json_and_clean_exit(tmp_path, app):
    result = CliRunner().invoke(app, ["dataset", "check", str(make_broken(tmp_path / "broken")), "--json"])
    assert result.exit_code == 1
    reported = {(p["case"], p["check"]) for p in json.loads(result.stdout)}
    assert set(BROKEN.items()) <= reported
    clean = CliRunner().invoke(app, ["dataset", "check", str(make_msd(tmp_path / "ok", cases=2))])
    assert clean.exit_code == 0, clean.output
    assert "no problems" in " ".join(clean.output.split())

"""`medseg infer` writes each case as one transaction: a kill -9 at any point of a case write leaves no sidecar
(so --skip-existing redoes the case), a rerun retires the old set, and a DICOM-SEG that cannot be written (a
negative study, a broken writer) never costs the mask."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medseg.infer import InferConfig, infer
from medseg.infer.outputs import incomplete_reason, output_paths
from medseg.io import read_volume
from medseg.io.dicom_write import write_dicom_series

REPO = Path(__file__).resolve().parents[2]
KILL_AT = Path(__file__).with_name("_kill_at.py")
THREADS = ["--set", "infer.threads=1"]
#: No component is this large: postprocessing removes every structure, as in a study with nothing to find.
NOTHING_FOUND = ["--set", "infer.postprocess.liver.min_size_mm3=1e12", "--set", "infer.postprocess.tumor.min_size_mm3=1e12"]


def _cli(*args: str, capsys=None) -> tuple[int, str]:
    from medseg.cli import main

    try:
        main.main(list(args))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err if capsys else ""


@pytest.fixture(scope="module")
def ct_series(trained, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("series") / "ct_dicom"
    write_dicom_series(read_volume(trained["dataset"] / "imagesTs" / "case_005.nii.gz"), folder, modality="CT")
    return folder


def test_a_negative_study_keeps_its_mask_and_sidecar_with_dicom_seg(trained, ct_series, tmp_path, capsys):
    out = tmp_path / "out"
    code, stderr = _cli("infer", str(trained["run"]), str(ct_series), "-o", str(out), "--dicom-seg", *NOTHING_FOUND, *THREADS, capsys=capsys)
    assert code == 0, stderr
    mask = read_volume(out / "ct_dicom.nii.gz", role="label")
    assert not mask.array.any(), "postprocessing removed every structure"
    sidecar = json.loads((out / "ct_dicom.json").read_text())
    record = sidecar["dicom_seg"]  # no SEG for an empty mask (medseg.io.dicom_seg.EmptyMaskError): the reason, warned once
    assert record["file"] is None and "no labelled voxels" in record["reason"], record
    assert sidecar["not_written"]["dicom_seg"] == {"reason": record["reason"], "input": True} and not (out / "ct_dicom_seg.dcm").exists()
    assert stderr.count("dicom-seg not written") == 1 and "Traceback" not in stderr, stderr
    assert incomplete_reason(output_paths(out, "ct_dicom"), sidecar["model"]["id"]) is None
    code, _ = _cli("infer", str(trained["run"]), str(ct_series), "-o", str(out), "--dicom-seg", "--skip-existing", *NOTHING_FOUND, *THREADS)
    assert code == 0 and json.loads((out / "infer_summary.json").read_text())["skipped_existing"] == ["ct_dicom"]


def test_a_broken_seg_writer_never_costs_the_mask(trained, segmenter, ct_series, tmp_path, monkeypatch):
    import medseg.io.dicom_seg as dicom_seg

    def broken(*args, **kwargs):
        raise RuntimeError("highdicom refused the frames")

    monkeypatch.setattr(dicom_seg, "write_dicom_seg", broken)
    config = InferConfig(threads=1, dicom_seg=True)
    segmenter.config = config
    try:
        report = infer(segmenter.model, ct_series, tmp_path / "out", config, segmenter=segmenter)
    finally:
        segmenter.config = InferConfig(threads=1)
    assert "highdicom refused the frames" in report.not_written["ct_dicom"]["dicom_seg"]
    summary = json.loads((tmp_path / "out" / "infer_summary.json").read_text())
    assert summary["written"] == ["ct_dicom"] and "dicom_seg" in summary["not_written"]["ct_dicom"]
    assert (tmp_path / "out" / "ct_dicom.nii.gz").is_file() and not (tmp_path / "out" / "ct_dicom_seg.dcm").exists()


@pytest.fixture(scope="module")
def complete_run(trained, tmp_path_factory) -> tuple[Path, Path]:
    """One case written completely, with probabilities: the 'previous run' every kill test starts from."""
    cases = tmp_path_factory.mktemp("kill_cases")
    shutil.copy(trained["dataset"] / "imagesTs" / "case_004.nii.gz", cases / "scan.nii.gz")
    out = tmp_path_factory.mktemp("kill_complete") / "out"
    code, stderr = _cli("infer", str(trained["run"]), str(cases), "-o", str(out), "--save-probabilities", *THREADS)
    assert code == 0, stderr
    return cases, out


@pytest.mark.integration
@pytest.mark.parametrize(("when", "name"), [("staged", "scan.nii.gz"), ("published", "scan.nii.gz"),
                                            ("published", "liver.nii.gz"), ("before", "scan.json")],
                         ids=["mask-staged", "after-mask", "after-extra", "before-sidecar"])
def test_a_kill_at_any_point_of_a_rewrite_leaves_no_sidecar(trained, complete_run, tmp_path, when, name):
    cases, complete = complete_run
    out = tmp_path / "out"
    shutil.copytree(complete, out)
    paths = output_paths(out, "scan")
    old_model = json.loads(paths.sidecar.read_text())["model"]["id"]
    command = [sys.executable, str(KILL_AT), when, name, "--", "infer", str(trained["run"]), str(cases), "-o", str(out), "--per-class", *THREADS]
    killed = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert killed.returncode == -9, f"the kill point was never reached: {killed.stderr[-2000:]}"
    assert not paths.sidecar.exists(), "a killed rewrite must leave no sidecar (the old one vouches for the old set)"
    assert not paths.probabilities.exists(), "the rerun does not ask for probabilities: the old file is retired first"
    assert incomplete_reason(paths, old_model) == "no sidecar"
    code, stderr = _cli("infer", str(trained["run"]), str(cases), "-o", str(out), "--per-class", "--skip-existing", *THREADS)
    assert code == 0, stderr
    assert json.loads((out / "infer_summary.json").read_text())["written"] == ["scan"], "the killed case is redone"
    document = json.loads(paths.sidecar.read_text())
    assert document["files"] == ["scan.nii.gz", "scan/liver.nii.gz", "scan/tumor.nii.gz"]
    assert incomplete_reason(paths, document["model"]["id"]) is None
    assert not [p.name for p in out.rglob(".*")], "no temporary or staging folder left"


def test_skip_existing_cleans_a_finished_cases_staging_folder_and_redoes_what_is_newly_asked(trained, complete_run, tmp_path):
    """A kill after the sidecar but before the staging folder went leaves it behind: removed on the next run even
    though the case is complete; asking for per-class masks now redoes a case written without them."""
    cases, complete = complete_run
    out = tmp_path / "out"
    shutil.copytree(complete, out)
    stale = out / f".{output_paths(out, 'scan').staging_key}.k1ll3d.tmp"
    stale.mkdir()
    (stale / "scan.nii.gz").write_bytes(b"staged, never published")
    code, stderr = _cli("infer", str(trained["run"]), str(cases), "-o", str(out), "--skip-existing", "--save-probabilities", *THREADS)
    assert code == 0, stderr
    assert json.loads((out / "infer_summary.json").read_text())["skipped_existing"] == ["scan"] and not stale.exists()
    code, stderr = _cli("infer", str(trained["run"]), str(cases), "-o", str(out), "--skip-existing", "--per-class", *THREADS)
    assert code == 0, stderr
    assert json.loads((out / "infer_summary.json").read_text())["written"] == ["scan"]
    assert json.loads((out / "scan.json").read_text())["outputs"]["per_class"] == ["scan/liver.nii.gz", "scan/tumor.nii.gz"]

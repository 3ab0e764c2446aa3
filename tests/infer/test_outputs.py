"""One transaction per case (medseg.infer.outputs): retire, stage, publish, the sidecar last; optional outputs never
cost the mask; --skip-existing trusts only a complete, current set. No model needed: tiny volumes, fake writers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.infer.outputs import (
    OptionalOutput,
    incomplete_reason,
    output_paths,
    per_class_output,
    probabilities_output,
    write_case,
)
from medseg.io import Volume, read_volume

NAMES = {0: "background", 1: "liver", 2: "tumor"}


@pytest.fixture()
def case():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(6, 5, 4)).astype(np.uint8)
    reference = Volume(np.zeros((6, 5, 4), np.float32), np.diag([1.5, 1.5, 3.0, 1.0]), "image")
    return labels, reference


def _sidecar(model_id: str = "abc") -> dict:
    return {"case": "scan", "model": {"id": model_id, "name": "dynunet"}, "labels": {}}


def _write(tmp_path, case, optional_keys=(), model_id="abc", extra=()):
    labels, reference = case
    paths = output_paths(tmp_path, "scan")
    optional = []
    if "per_class" in optional_keys:
        optional.append(per_class_output(labels, reference, NAMES, paths))
    if "probabilities" in optional_keys:
        probabilities = np.stack([labels == k for k in range(3)]).astype(np.float16)
        optional.append(probabilities_output(probabilities, reference, list(NAMES.values()), paths, compress=True))
    return paths, write_case(labels, reference, NAMES, _sidecar(model_id), paths, [*optional, *extra])


def _failing(key: str, error: Exception) -> OptionalOutput:
    def write(staged):
        raise error

    return OptionalOutput(key, write)


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def test_a_complete_set_names_every_file_and_is_trusted(tmp_path, case):
    paths, written = _write(tmp_path, case, ("per_class", "probabilities"))
    document = json.loads(paths.sidecar.read_text())
    assert written.files[-1] == paths.sidecar and not written.not_written
    assert document["files"] == ["scan.nii.gz", "scan/liver.nii.gz", "scan/tumor.nii.gz", "scan_probabilities.npz"]
    assert all((tmp_path / name).is_file() for name in document["files"])
    np.testing.assert_array_equal(read_volume(paths.mask, role="label").array, case[0])
    assert np.load(paths.probabilities)["probabilities"].shape == (3, 6, 5, 4)
    assert incomplete_reason(paths, "abc") is None
    assert _leftovers(tmp_path) == [], "no staging folder or temporary left"


def test_a_failing_optional_output_keeps_the_mask_and_records_why(tmp_path, case, caplog):
    boom = _failing("dicom_seg", RuntimeError("the SEG writer broke"))
    paths, written = _write(tmp_path, case, ("probabilities",), extra=[boom])
    document = json.loads(paths.sidecar.read_text())
    assert paths.mask.is_file() and paths.probabilities.is_file()
    assert "the SEG writer broke" in written.not_written["dicom_seg"]
    assert document["not_written"]["dicom_seg"] == {"reason": written.not_written["dicom_seg"], "input": False}
    assert document["dicom_seg"]["file"] is None and "the SEG writer broke" in document["dicom_seg"]["reason"]
    assert document["outputs"]["dicom_seg"] is None
    assert [r.levelname for r in caplog.records if "dicom-seg not written" in r.getMessage()] == ["WARNING"]
    assert incomplete_reason(paths, "abc") is None, "a complete set: the SEG was left out on purpose, and said so"


def test_an_input_error_in_an_optional_output_names_the_file_not_its_folders(tmp_path, case):
    from medseg.errors import InputError

    boom = _failing("dicom_seg", InputError("/patients/Jane_Doe_1970/series_3", "mask has no labelled voxels"))
    _, written = _write(tmp_path, case, extra=[boom])
    assert written.not_written["dicom_seg"] == "series_3: mask has no labelled voxels"


def test_a_rerun_retires_the_old_sidecar_and_extras(tmp_path, case):
    paths, _ = _write(tmp_path, case, ("per_class", "probabilities"))
    (paths.per_class_dir / "notes.txt").write_text("the user's own file")
    _, written = _write(tmp_path, case, model_id="def")  # a new model, no extras asked for
    assert not paths.probabilities.exists(), "an older run's probabilities must not stay beside a new mask"
    assert not (paths.per_class_dir / "liver.nii.gz").exists()
    assert (paths.per_class_dir / "notes.txt").read_text() == "the user's own file", "only medseg's own files are retired"
    assert json.loads(paths.sidecar.read_text())["model"]["id"] == "def"
    assert [p.name for p in written.files] == ["scan.nii.gz", "scan.json"]


def test_a_failed_rewrite_leaves_no_sidecar_of_the_old_run(tmp_path, case, monkeypatch):
    paths, _ = _write(tmp_path, case, ("probabilities",))
    import medseg.infer.outputs as outputs

    def broken_json(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "write_json", broken_json)
    with pytest.raises(OSError):
        _write(tmp_path, case, model_id="def")
    assert not paths.sidecar.exists(), "the old sidecar must not vouch for a set it no longer describes"
    assert not paths.mask.exists() and not paths.probabilities.exists()
    assert incomplete_reason(paths, "def") == "no sidecar"
    assert _leftovers(tmp_path) == []


def test_a_failing_mask_write_publishes_nothing(tmp_path, case, monkeypatch):
    import medseg.infer.outputs as outputs

    def broken(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(outputs, "write_label_map", broken)
    with pytest.raises(OSError):
        _write(tmp_path, case, ("probabilities",))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_skip_existing_trusts_only_a_complete_current_set(tmp_path, case):
    paths, _ = _write(tmp_path, case, ("probabilities",))
    assert incomplete_reason(paths, "abc") is None
    assert incomplete_reason(paths, "xyz") == "it was made by model abc, not by xyz"
    paths.probabilities.unlink()
    assert incomplete_reason(paths, "abc") == "its sidecar names scan_probabilities.npz, which is missing"
    paths.sidecar.write_text("{not json")
    assert "not readable JSON" in incomplete_reason(paths, "abc")
    paths.sidecar.unlink()
    assert incomplete_reason(paths, "abc") == "no sidecar"


def test_sidecars_of_older_medseg_are_read_by_their_outputs(tmp_path, case):
    """Before the ``files`` list, a sidecar named its files under ``outputs``: those are checked instead."""
    paths, _ = _write(tmp_path, case, ("per_class",))
    document = json.loads(paths.sidecar.read_text())
    del document["files"], document["not_written"]
    paths.sidecar.write_text(json.dumps(document))
    assert incomplete_reason(paths, "abc") is None
    (paths.per_class_dir / "tumor.nii.gz").unlink()
    assert incomplete_reason(paths, "abc") == "its sidecar names tumor.nii.gz, which is missing"


def test_retire_never_deletes_another_cases_files_named_like_side_files(tmp_path, case):
    """Case ``scan_entropy`` (a mask named like scan's entropy map) and ``scan_lesions`` (a sidecar named like scan's
    lesion records) are other cases: rewriting ``scan`` leaves them whole."""
    labels, reference = case
    for other in ("scan_entropy", "scan_lesions"):
        write_case(labels, reference, NAMES, _sidecar() | {"case": other}, output_paths(tmp_path, other))
    _write(tmp_path, case)
    _write(tmp_path, case)  # a rerun of scan: its retire step runs with an old sidecar in place
    for other in ("scan_entropy", "scan_lesions"):
        assert incomplete_reason(output_paths(tmp_path, other), "abc") is None, other


def test_single_file_output_leaves_the_users_neighbouring_files_alone(tmp_path, case):
    labels, reference = case
    (tmp_path / "seg").mkdir()
    mine = [tmp_path / "seg" / "liver.nii.gz", tmp_path / "seg_probabilities.npz", tmp_path / "seg_seg.dcm"]
    for path in mine:
        path.write_bytes(b"the user's own file")
    paths = output_paths(tmp_path / "seg.nii.gz", "ignored", single_file=True)
    write_case(labels, reference, NAMES, _sidecar(), paths)
    assert all(path.read_bytes() == b"the user's own file" for path in mine)
    assert json.loads(paths.sidecar.read_text())["files"] == ["seg.nii.gz"]


def test_per_class_names_that_would_share_a_file_get_their_own(tmp_path, case):
    labels, reference = case
    names = {0: "background", 1: "left kidney", 2: "Left/Kidney"}
    paths = output_paths(tmp_path, "scan")
    write_case(labels, reference, names, _sidecar(), paths, [per_class_output(labels, reference, names, paths)])
    assert json.loads(paths.sidecar.read_text())["outputs"]["per_class"] == ["scan/left_kidney.nii.gz", "scan/Left_Kidney_2.nii.gz"]
    np.testing.assert_array_equal(read_volume(paths.per_class_dir / "Left_Kidney_2.nii.gz", role="label").array, labels == 2)


def test_an_optional_output_that_cannot_be_published_never_costs_the_mask(tmp_path, case):
    (tmp_path / "scan").write_text("a file where the per-class folder should be")
    paths, written = _write(tmp_path, case, ("per_class", "probabilities"))
    document = json.loads(paths.sidecar.read_text())
    assert "per_class" in written.not_written and document["files"] == ["scan.nii.gz", "scan_probabilities.npz"]
    assert document["outputs"]["per_class"] == [] and paths.mask.is_file() and _leftovers(tmp_path) == []


def test_skip_existing_redoes_a_case_lacking_an_output_now_asked_for(tmp_path, case):
    from medseg.errors import InputError

    paths, _ = _write(tmp_path, case)
    assert incomplete_reason(paths, "abc", ["dicom_seg"]) == "its dicom-seg was asked for and is not there"
    _write(tmp_path, case, extra=[_failing("dicom_seg", OSError(28, "No space left on device", "/out/scan_seg.dcm"))])
    assert incomplete_reason(paths, "abc", ["dicom_seg"]) is not None, "a full disk is tried again"
    _write(tmp_path, case, extra=[_failing("dicom_seg", InputError("/patients/ct", "mask has no labelled voxels"))])
    assert incomplete_reason(paths, "abc", ["dicom_seg"]) is None, "a SEG refused because of the input is not retried"
    _write(tmp_path, case, ("probabilities",))
    assert incomplete_reason(paths, "abc", ["probabilities"]) is None


def test_reasons_name_files_never_their_folders(tmp_path, case):
    error = OSError(28, "No space left on device", "/patients/Jane Doe 1970/out/scan_seg.dcm")
    paths, written = _write(tmp_path, case, extra=[_failing("dicom_seg", error)])
    assert written.not_written["dicom_seg"] == "OSError: No space left on device (scan_seg.dcm)"
    boom = RuntimeError("cannot open '/patients/Jane Doe 1970/ct/0001.dcm' or /patients/jd/ct/0002.dcm")
    _, written = _write(tmp_path, case, extra=[_failing("dicom_seg", boom)])
    assert "Jane" not in written.not_written["dicom_seg"] and "jd" not in written.not_written["dicom_seg"]
    assert "0001.dcm" in written.not_written["dicom_seg"]

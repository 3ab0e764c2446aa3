"""INPUT resolution: files, folders, globs, DICOM folders and nnU-Net channel groups."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import InputError
from medseg.infer.inputs import discover_cases, read_case
from medseg.io import Volume, write_volume
from medseg.io.dicom_write import write_dicom_series


def _write(path, shape=(8, 8, 4), channels=None):
    array = np.zeros(shape if channels is None else (*shape, channels), dtype=np.int16)
    write_volume(Volume(array, np.eye(4)), path)
    return path


def test_folder_of_files_and_dicom_series(tmp_path):
    _write(tmp_path / "b.nii.gz")
    _write(tmp_path / "a_0000.nii.gz")
    _write(tmp_path / "c.mha")
    (tmp_path / "notes.txt").write_text("not an image")
    write_dicom_series(Volume(np.zeros((8, 8, 3), np.int16), np.eye(4)), tmp_path / "series1")
    cases = discover_cases(tmp_path, in_channels=1).cases
    assert [(case.name, case.dicom) for case in cases] == [("a", False), ("b", False), ("c", False), ("series1", True)]


def test_dicom_folder_is_one_case(tmp_path):
    write_dicom_series(Volume(np.zeros((8, 8, 3), np.int16), np.eye(4)), tmp_path / "ct")
    discovery = discover_cases(tmp_path / "ct", in_channels=1)
    assert discovery.single and [c.name for c in discovery.cases] == ["ct"] and discovery.cases[0].dicom


def test_glob(tmp_path):
    for name in ("x1.nii.gz", "x2.nii.gz", "y.nii.gz"):
        _write(tmp_path / name)
    cases = discover_cases(str(tmp_path / "x*.nii.gz"), in_channels=1).cases
    assert [case.name for case in cases] == ["x1", "x2"]
    with pytest.raises(InputError, match="no files or folders match"):
        discover_cases(str(tmp_path / "z*.nii.gz"), in_channels=1)


def test_channel_groups_for_multichannel_models(tmp_path):
    for name in ("p_0000", "p_0001", "q_0000"):
        _write(tmp_path / f"{name}.nii.gz")
    cases = {case.name: case for case in discover_cases(tmp_path, in_channels=2).cases}
    assert [path.name for path in cases["p"].paths] == ["p_0000.nii.gz", "p_0001.nii.gz"] and cases["p"].problem is None
    assert "has channel files _0000; the model takes 2" in cases["q"].problem
    with pytest.raises(InputError, match="the model takes 2"):
        read_case(cases["q"], 2, 3)
    volumes = read_case(cases["p"], 2, 3)
    assert len(volumes) == 2


def test_extra_channel_files_for_a_single_channel_model_are_reported(tmp_path):
    _write(tmp_path / "m_0000.nii.gz")
    _write(tmp_path / "m_0001.nii.gz")
    (case,) = discover_cases(tmp_path, in_channels=1).cases
    assert case.name == "m" and "the model takes 1 channel" in case.problem


def test_channel_count_and_2d_checks(tmp_path):
    four_d = _write(tmp_path / "two.nii.gz", channels=2)
    (case,) = discover_cases(four_d, in_channels=1).cases
    with pytest.raises(InputError, match="has 2 channel"):
        read_case(case, 1, 3)
    assert len(read_case(case, 2, 3)) == 2  # a 4D file is a multi-channel case
    flat = _write(tmp_path / "flat.nii.gz", shape=(16, 16, 1))
    (case,) = discover_cases(flat, in_channels=1).cases
    with pytest.raises(InputError, match="2D image"):
        read_case(case, 1, 3)


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discover_cases(tmp_path / "nope.nii.gz", in_channels=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        discover_cases(tmp_path / "empty", in_channels=1)


def test_nested_dicom_export_is_one_input(tmp_path):
    write_dicom_series(Volume(np.zeros((8, 8, 3), np.int16), np.eye(4)), tmp_path / "export" / "study" / "series")
    discovery = discover_cases(tmp_path / "export", in_channels=1)
    assert discovery.single and [(c.name, c.dicom) for c in discovery.cases] == [("export", True)]
    assert read_case(discovery.cases[0], 1, 3)[0].shape == (8, 8, 3)


# --- case folders laid out as the training import's (medseg dataset import) -----------------------
def _imported(tmp_path):
    from medseg.data.dataset import load_dataset
    from medseg.data.importer import import_dataset, resolve_spec
    from medseg.schema.plan import CaseFolderLayout
    from tests.data._builders import brats_like

    src = brats_like(tmp_path / "src")
    import_dataset(src, tmp_path / "dataset", resolve_spec(preset="brats2015"))
    description = load_dataset(tmp_path / "dataset")
    return src, tmp_path / "dataset", CaseFolderLayout(channels=description.channel_patterns, mask=description.mask_pattern)


def test_import_records_the_case_folder_layout(tmp_path):
    _, _, layout = _imported(tmp_path)
    assert layout.channels == ["Flair*", "T1c*"] and layout.mask == "brainmask*"


def test_a_case_folder_reads_exactly_as_its_imported_channels(tmp_path):
    from medseg.infer.inputs import discover_cases, read_case
    from medseg.io.readers import read_volume

    src, dataset, layout = _imported(tmp_path)
    found = discover_cases(src / "pat01", 2, layout)
    assert found.single and [case.name for case in found.cases] == ["pat01"]
    case = found.cases[0]
    assert [path.name for path in case.paths] == ["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"] and case.mask.name == "brainmask.nii.gz"
    volumes = read_case(case, 2, 3)
    for index, volume in enumerate(volumes):  # the mask applied as at import: the very arrays training saw
        imported = read_volume(dataset / "imagesTr" / f"pat01_{index:04d}.nii.gz")
        assert np.array_equal(volume.array, imported.array) and np.allclose(volume.affine, imported.affine)
    assert (volumes[0].array == 0).any()  # outside the brain mask (air was -3.5 in the source)


def test_a_folder_of_case_folders_and_one_that_does_not_match(tmp_path):
    from medseg.infer.inputs import discover_cases

    src, _, layout = _imported(tmp_path)
    (src / "notes").mkdir()
    (src / "notes" / "readme.nii.gz").write_bytes(b"")
    found = discover_cases(src, 2, layout)
    assert not found.single and [case.name for case in found.cases] == ["notes", "pat00", "pat01"]
    assert found.cases[0].problem.startswith("no file matches the channel 0 (Flair*) pattern")
    assert found.cases[1].problem is None and found.cases[2].problem is None
    without = discover_cases(src / "pat00", 2, None)  # a model without the layout: plain files, one case each
    assert {case.name for case in without.cases} >= {"Flair_subtrMeanDivStd", "T1c_subtrMeanDivStd"}


def test_a_dataset_run_folder_names_the_configuration_runs_inside_it(tmp_path):
    """`medseg train DATASET` without -o writes runs/<dataset>/<configuration>/fold_0; inferring with
    runs/<dataset> must say which folder to pass instead of only "not a run folder"."""
    from medseg.infer.model import resolve_checkpoints

    fold = tmp_path / "runs" / "Liver" / "3d_lowres" / "fold_0"
    fold.mkdir(parents=True)
    (fold / "checkpoint_best.pt").write_bytes(b"")
    with pytest.raises(InputError, match="holds the run folder\\(s\\) .*3d_lowres: pass one of those"):
        resolve_checkpoints(tmp_path / "runs" / "Liver")
    assert resolve_checkpoints(tmp_path / "runs" / "Liver" / "3d_lowres") == [fold / "checkpoint_best.pt"]

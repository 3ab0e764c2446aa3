"""`medseg dataset import` from parallel folders (images + masks with matching file names)."""

from __future__ import annotations

import json

from tests.data.test_importer import parallel_folders


def test_import_parallel_folders_from_the_command_line(tmp_path, run_cli):
    src = parallel_folders(tmp_path / "lidc")
    result = run_cli("dataset", "import", src, tmp_path / "out", "--images", "CT=image", "--labels", "nodule_mask", "--label-name", "1=nodule")
    assert result.code == 0, result.err
    out = " ".join(result.out.split())
    assert "3 training case(s), channels CT, labels {'background': 0, 'nodule': 1}; 6 file(s) linked" in out and "has no problems" in out
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["medseg_import"]["labels"] == "nodule_mask"
    assert run_cli("dataset", "import", src, tmp_path / "by_preset", "--preset", "lidc").code == 0


def test_unmatched_names_and_a_missing_channel_name_are_one_error_line(tmp_path, run_cli):
    src = parallel_folders(tmp_path / "lidc")
    (src / "nodule_mask" / "p2_R_1.nii.gz").unlink()
    result = run_cli("dataset", "import", src, tmp_path / "out", "--preset", "lidc")
    assert result.code == 2 and result.err.count("error:") == 1 and "1 missing from nodule_mask/ (p2_R_1)" in result.err
    assert not (tmp_path / "out").exists()
    result = run_cli("dataset", "import", src, tmp_path / "out", "--images", "image", "--labels", "nodule_mask")
    assert result.code == 2 and "expected NAME=DIR, e.g. --images CT=image" in " ".join(result.err.split())


def test_help_shows_the_parallel_folder_options_and_examples(run_cli):
    result = run_cli("dataset", "import", "--help")
    text = " ".join(result.out.split())
    assert result.code == 0 and "--images" in text and "--labels" in text
    assert "--images CT=image --labels nodule_mask --label-name 1=nodule" in text and "--preset lidc" in text

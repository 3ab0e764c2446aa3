"""Every bad input ends in one `error:` line naming the file, exit code 2, and no output file."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.io import Volume, write_volume
from tests.io.helpers import oblique_affine


def _good_nifti(path: Path, array=None) -> Path:
    array = np.arange(8 * 9 * 10, dtype=np.int16).reshape(8, 9, 10) if array is None else array
    nib.save(nib.Nifti1Image(array, oblique_affine()), path)
    return path


def _dicom_series(folder: Path) -> list[Path]:
    from medseg.io.dicom_write import write_dicom_series

    array = np.random.default_rng(0).integers(-1000, 1000, (12, 10, 6)).astype(np.int16)
    return write_dicom_series(Volume(array, oblique_affine(spacing=(0.8, 0.8, 2.5))), folder)


def missing_path(tmp: Path) -> tuple[Path, str, list[str]]:
    return tmp / "nope.nii.gz", "does not exist", []


def not_an_image(tmp: Path):
    path = tmp / "notes.txt"
    path.write_text("hello")
    return path, "unsupported format", []


def text_named_nifti(tmp: Path):
    path = tmp / "fake.nii.gz"
    path.write_bytes(gzip.compress(b"this is not a nifti header" * 20))
    return path, "not a readable NIfTI", []


def truncated_nifti(tmp: Path):
    """Cut inside the voxel data: the header reads, the data does not."""
    noise = np.random.default_rng(1).integers(0, 30000, (40, 40, 40)).astype(np.int16)
    good = _good_nifti(tmp / "good.nii.gz", noise)
    path = tmp / "truncated.nii.gz"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    good.unlink()
    return path, "truncated or corrupt", []


def truncated_nifti_header(tmp: Path):
    """Cut inside the 348-byte header."""
    good = _good_nifti(tmp / "good.nii.gz")
    path = tmp / "truncated_header.nii.gz"
    path.write_bytes(good.read_bytes()[:60])
    good.unlink()
    return path, "truncated or corrupt", []


def zero_byte(tmp: Path):
    path = tmp / "empty.nii.gz"
    path.touch()
    return path, "empty (0 bytes)", []


def dicom_folder_without_image(tmp: Path):
    folder = tmp / "no_dicom"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    return folder, "no DICOM image", []


def series_with_a_slice_far_away(tmp: Path):
    """One slice 100 mm beyond the others: a gap too wide to interpolate (a narrow one is, with a warning)."""
    import pydicom

    folder = tmp / "series"
    files = _dicom_series(folder)
    last = max(files, key=lambda f: pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber)
    ds = pydicom.dcmread(last)
    normal = np.cross(*np.reshape([float(v) for v in ds.ImageOrientationPatient], (2, 3)))
    ds.ImagePositionPatient = [f"{v:.4f}" for v in np.array([float(v) for v in ds.ImagePositionPatient]) + 100.0 * normal]
    ds.save_as(last)
    return folder, "too far apart to interpolate", []


def nan_label(tmp: Path):
    array = np.zeros((6, 6, 6), np.float32)
    array[3, 3, 3] = np.nan
    return _good_nifti(tmp / "nan_label.nii.gz", array), "NaN/inf", ["--label"]


def four_d_when_3d_expected(tmp: Path):
    array = np.zeros((6, 6, 6, 3), np.float32)
    return _good_nifti(tmp / "four_d.nii.gz", array), "4D", ["--label"]


CASES = [
    missing_path,
    not_an_image,
    text_named_nifti,
    truncated_nifti,
    truncated_nifti_header,
    zero_byte,
    dicom_folder_without_image,
    series_with_a_slice_far_away,
    nan_label,
    four_d_when_3d_expected,
]


@pytest.mark.parametrize("make_case", CASES, ids=[case.__name__ for case in CASES])
def test_convert_bad_input(tmp_path, run_cli, make_case):
    source, expected, extra = make_case(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "converted.nii.gz"
    result = run_cli("convert", source, output, *extra)
    assert result.code == 2, result.err
    lines = [line for line in result.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {result.err!r}"
    assert lines[0].startswith("error:")
    assert expected in lines[0]
    assert source.name in lines[0]
    assert "Traceback" not in result.err
    assert list(out_dir.iterdir()) == [], "no output (not even a temp file) may be left behind"


@pytest.mark.parametrize("make_case", [truncated_nifti, zero_byte, missing_path], ids=["truncated", "zero_byte", "missing"])
def test_info_bad_input(tmp_path, run_cli, make_case):
    source, expected, _ = make_case(tmp_path)
    result = run_cli("info", source)
    assert result.code == 2 and expected in result.err and "Traceback" not in result.err


def test_debug_shows_traceback(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "medseg.cli.main", "--debug", "info", str(tmp_path / "nope.nii")], capture_output=True, text=True)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "does not exist" in result.stderr


def test_unwritable_output_format_leaves_nothing(tmp_path, run_cli):
    source = _good_nifti(tmp_path / "ok.nii.gz")
    result = run_cli("convert", source, tmp_path / "out.png")
    assert result.code == 2 and "cannot write format" in result.err
    assert not (tmp_path / "out.png").exists()


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    """A writer crashing half-way must not clobber the existing output nor leave a temp file."""
    from medseg.io import nifti

    volume = Volume(np.ones((4, 4, 4), np.int16), np.eye(4))
    target = tmp_path / "kept.nii.gz"
    write_volume(volume, target)
    before = target.read_bytes()

    def explode(volume, path):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("medseg.io.readers.write_nifti", explode)
    with pytest.raises(OSError):
        write_volume(volume, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.nii.gz"]
    assert nifti  # the module stays importable

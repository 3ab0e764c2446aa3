"""Hostile DICOM series through `medseg convert`: one `error:` line naming the broken file, exit 2, nothing written.

Each case starts from a small, valid synthetic series and breaks one thing. A slice that cannot be placed in
world space is refused by name, never skipped (issue 12.3); a gap too wide to interpolate names the files on both
sides of it (a narrower one is interpolated, issue 15.3).
"""

from __future__ import annotations

import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medseg.io import Volume
from medseg.io.dicom_write import write_dicom_series
from tests.hostile.harness import assert_refused, run_medseg
from tests.io.helpers import oblique_affine

SHAPE = (12, 10, 6)


def _series(folder: Path) -> list[Path]:
    """Six slices in position order (the writer names them slice_0000..slice_0005 along the normal)."""
    array = np.random.default_rng(0).integers(-1000, 1000, SHAPE).astype(np.int16)
    return write_dicom_series(Volume(array, oblique_affine(spacing=(0.8, 0.8, 2.5))), folder)


def _edit(path: Path, delete=(), **changes) -> None:
    ds = pydicom.dcmread(path)
    for key in delete:
        delattr(ds, key)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)


def _patch_value(path: Path, tag: bytes, text: bytes) -> None:
    """Overwrite an explicit-VR element's value bytes in place (pydicom refuses to write invalid DS values)."""
    raw = bytearray(path.read_bytes())
    at = raw.find(tag)
    length = struct.unpack("<H", raw[at + 6: at + 8])[0]
    raw[at + 8: at + 8 + length] = (text + b" " * length)[:length]
    path.write_bytes(bytes(raw))


def _convert(tmp_path: Path, folder: Path):
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    return run_medseg(["convert", folder, out_dir / "x.nii.gz"], cwd=tmp_path), out_dir


def missing_ipp_at_end(files):
    _edit(files[-1], delete=["ImagePositionPatient"])  # used to be dropped: the volume came out one slice short
    return files[-1], "no ImagePositionPatient"


def missing_ipp_in_middle(files):
    _edit(files[2], delete=["ImagePositionPatient"])  # used to read as "missing slices" without naming it
    return files[2], "no ImagePositionPatient"


def missing_iop(files):
    _edit(files[3], delete=["ImageOrientationPatient"])
    return files[3], "no ImageOrientationPatient"


def non_numeric_ipp(files):
    _patch_value(files[1], b"\x20\x00\x32\x00DS", b"abc\\x\\y")
    return files[1], "ImagePositionPatient 'abc\\x\\y' is not 3 finite numbers"


def nan_ipp(files):
    _patch_value(files[4], b"\x20\x00\x32\x00DS", b"nan\\0\\0")
    return files[4], "is not 3 finite numbers"


def slice_far_from_the_stack(files):
    ds = pydicom.dcmread(files[5])
    normal = np.cross(*np.reshape([float(v) for v in ds.ImageOrientationPatient], (2, 3)))
    _edit(files[5], ImagePositionPatient=[f"{v:.4f}" for v in np.array([float(v) for v in ds.ImagePositionPatient]) + 100.0 * normal])
    return files[0].parent, "missing slices: a gap of 102.5 mm between slice positions"  # both neighbours: checked below


def disagreeing_duplicate(files):
    ds = pydicom.dcmread(files[2])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.PixelData = np.zeros((SHAPE[1], SHAPE[0]), "<i2").tobytes()  # same place, other pixels
    ds.save_as(files[0].parent / "other_phase.dcm")
    return files[0].parent / "other_phase.dcm", "duplicate slice positions"


def rows_mismatch(files):
    _edit(files[4], Rows=SHAPE[1] // 2, PixelData=np.zeros((SHAPE[1] // 2, SHAPE[0]), "<i2").tobytes())
    return files[4], "slices differ in Rows"


def missing_pixel_data(files):
    _edit(files[1], delete=["PixelData"])
    return files[1], "no pixel data"


def huge_declared_size(files):
    for path in files:  # 40000 x 40000 x 16 bit declared (3.2 GB a slice), 240 bytes stored
        _edit(path, Rows=40000, Columns=40000)
    return files[0], "pixel data holds 240 bytes but Rows x Columns x BitsAllocated (40000 x 40000 x 16) need 3200000000"


def truncated_pixel_data(files):
    data = files[5].read_bytes()
    files[5].write_bytes(data[: len(data) - 60])
    return files[5], "pixel data holds 180 bytes"


def truncated_header(files):
    data = files[3].read_bytes()
    files[3].write_bytes(data[:200])  # DICM marker, then the header stops
    return files[3], "not a readable DICOM file"


def tilt_far_beyond_a_stack(files):
    column = np.array([float(v) for v in pydicom.dcmread(files[0]).ImageOrientationPatient][3:])
    for k, path in enumerate(files):
        position = np.array([float(v) for v in pydicom.dcmread(path).ImagePositionPatient]) + k * 5000.0 * column
        _edit(path, ImagePositionPatient=[f"{v:.4f}" for v in position])
    return files[0].parent, "do not form one stack"


CASES = [missing_ipp_at_end, missing_ipp_in_middle, missing_iop, non_numeric_ipp, nan_ipp, slice_far_from_the_stack,
         disagreeing_duplicate, rows_mismatch, missing_pixel_data, huge_declared_size, truncated_pixel_data,
         truncated_header, tilt_far_beyond_a_stack]


@pytest.mark.parametrize("break_series", CASES, ids=[case.__name__ for case in CASES])
def test_broken_series_is_refused_naming_the_file(tmp_path, break_series):
    folder = tmp_path / "series"
    files = _series(folder)
    named, expected = break_series(files)
    outcome, out_dir = _convert(tmp_path, folder)
    assert_refused(outcome, named, expected, out_dir=out_dir)
    if break_series is slice_far_from_the_stack:
        assert "slice_0004.dcm and slice_0005.dcm" in outcome.error_lines[0] and "too far apart to interpolate" in outcome.error_lines[0]
    if break_series is disagreeing_duplicate:
        assert "slice_0002.dcm" in outcome.error_lines[0]


def test_series_mixing_two_modalities_is_refused(tmp_path):
    """Slices 1-6 CT, 7-12 MR under one SeriesInstanceUID used to stack into one volume of HU and MR units (issue #26.10)."""
    array = np.random.default_rng(0).integers(-1000, 1000, (12, 10, 12)).astype(np.int16)
    files = write_dicom_series(Volume(array, oblique_affine(spacing=(0.8, 0.8, 2.5))), tmp_path / "series")
    for path in files[6:]:
        _edit(path, Modality="MR")
    outcome, out_dir = _convert(tmp_path, tmp_path / "series")
    assert_refused(outcome, files[6], "Modality is MR but slice_0000.dcm of the same series is CT", out_dir=out_dir)
    assert "mixes modalities (6 CT, 6 MR slices)" in outcome.error_lines[0]


def test_non_dicom_files_among_the_slices_are_skipped(tmp_path):
    folder = tmp_path / "series"
    _series(folder)
    (folder / "notes.txt").write_text("scanned on Tuesday")
    (folder / "thumbnail.dcm").write_bytes(np.random.default_rng(1).bytes(500))  # .dcm name, no DICM marker
    outcome, out_dir = _convert(tmp_path, folder)
    assert outcome.code == 0, outcome.stderr
    assert nib.load(out_dir / "x.nii.gz").shape == SHAPE


def test_folder_with_only_a_structured_report_is_refused(tmp_path):
    folder = tmp_path / "sr_only"
    folder.mkdir()
    report = pydicom.Dataset()
    report.file_meta = pydicom.dataset.FileMetaDataset()
    report.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    report.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    report.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    report.SOPClassUID, report.SOPInstanceUID = report.file_meta.MediaStorageSOPClassUID, report.file_meta.MediaStorageSOPInstanceUID
    report.Modality = "SR"
    report.save_as(folder / "report.dcm", enforce_file_format=True)
    outcome, out_dir = _convert(tmp_path, folder)
    assert_refused(outcome, folder, "no DICOM image series found (1 no image plane)", out_dir=out_dir)

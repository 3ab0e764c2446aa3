"""NRRD/MetaImage specifics: SimpleITK is imported lazily, .mhd writes are atomic (header and .zraw),
and headers without a voxel size are read with a warning."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from medseg.errors import InputError
from medseg.io import read_volume, write_volume
from tests.io.helpers import random_volume


def test_readers_do_not_import_simpleitk():
    code = "import medseg.io.readers, medseg.io, sys; print('SimpleITK' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_mhd_write_makes_header_and_data(tmp_path, rng):
    volume = random_volume(rng)
    path = write_volume(volume, tmp_path / "scan.mhd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.mhd", "scan.zraw"]
    assert "ElementDataFile = scan.zraw" in path.read_text(errors="replace")
    np.testing.assert_array_equal(read_volume(path).array, volume.array)
    write_volume(volume.with_array(volume.array + 1), path)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.mhd", "scan.zraw"]
    np.testing.assert_array_equal(read_volume(path).array, volume.array + 1)


@pytest.mark.parametrize("suffix", [".mhd", ".mha", ".nrrd"])
def test_failing_itk_writer_leaves_nothing(tmp_path, rng, monkeypatch, suffix):
    import SimpleITK as sitk

    real_write = sitk.WriteImage

    def write_then_fail(image, name, *args, **kwargs):
        real_write(image, name, *args, **kwargs)  # header and data are on disk (in the temporary place)
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", write_then_fail)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError, match="disk full"):
        write_volume(random_volume(rng), out / f"scan{suffix}")
    assert list(out.iterdir()) == []


def test_sheared_mhd_is_refused_without_leftovers(tmp_path, rng):
    volume = random_volume(rng)
    volume.affine[0, 1] = 0.5 * volume.affine[1, 1] + 0.3
    with pytest.raises(InputError, match="sheared"):
        write_volume(volume, tmp_path / "tilted.mhd")
    assert list(tmp_path.iterdir()) == []


def test_nrrd_without_spacing_warns_and_assumes_1mm(tmp_path, caplog):
    path = tmp_path / "plain.nrrd"
    path.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2 3 4\nencoding: raw\nendian: little\n\n" + bytes(48))
    with caplog.at_level(logging.WARNING, logger="medseg.io.itk"):
        volume = read_volume(path)
    assert np.allclose(volume.spacing, 1.0) and volume.shape == (2, 3, 4)
    assert any("plain.nrrd" in record.getMessage() and "1 mm" in record.getMessage() for record in caplog.records)


def test_itk_read_is_fortran_view_of_the_right_values(tmp_path, rng):
    volume = random_volume(rng, shape=(5, 6, 7))
    path = write_volume(volume, tmp_path / "scan.nrrd")
    back = read_volume(path)
    assert back.array.flags.f_contiguous
    np.testing.assert_array_equal(back.array, volume.array)

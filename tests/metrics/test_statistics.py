"""Statistics without ground truth on a synthetic image with known values."""

import numpy as np
import pytest

from medseg.errors import InputError
from medseg.io.volume import Volume
from medseg.metrics import segmentation_statistics
from medseg.metrics.outputs import read_csv
from medseg.metrics.statistics import write_statistics


def _scene():
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 5.0]
    seg = np.zeros((30, 30, 10), np.uint8)
    seg[2:12, 4:8, 1:3] = 1  # organ: 10x4x2 voxels
    seg[20:24, 20:24, 5] = 2  # lesion A
    seg[20:22, 2:4, 8] = 2  # lesion B
    image = np.full(seg.shape, -1000.0)
    image[seg == 1] = 50.0
    image[2:7, 4:8, 1:3] = 70.0  # half of the organ brighter
    return Volume(seg, affine, "label"), Volume(image, affine, "image")


def test_structure_and_lesion_statistics(tmp_path):
    seg, image = _scene()
    statistics = segmentation_statistics(seg, image, {"1": "organ", "2": "tumor"}, lesion_labels=["tumor"])
    organ = statistics["structures"]["organ"]
    assert organ["voxels"] == 80 and organ["volume_ml"] == pytest.approx(80 * 0.5 * 0.5 * 2 / 1000)
    assert organ["intensity"]["mean"] == pytest.approx(60.0) and organ["intensity"]["std"] == pytest.approx(10.0)
    assert organ["bbox_voxel"] == {"min": [2, 4, 1], "max": [11, 7, 2]}
    centre = np.array([6.5, 5.5, 1.5]) * [0.5, 0.5, 2.0] + [-10.0, 20.0, 5.0]
    np.testing.assert_allclose(organ["centroid_mm"], centre)
    np.testing.assert_allclose(organ["bbox_mm"]["min"], np.array([2, 4, 1]) * [0.5, 0.5, 2.0] + [-10.0, 20.0, 5.0])
    lesions = statistics["lesions"]["tumor"]
    assert len(lesions) == 2
    first = [lesion for lesion in lesions if lesion["voxels"] == 16][0]
    assert first["long_axis_mm"] == pytest.approx(np.hypot(2.0, 2.0))
    assert first["axial_z_mm"] == pytest.approx(5 * 2.0 + 5.0)
    files = write_statistics(statistics, tmp_path / "stats")
    assert {path.name for path in files} == {"statistics.json", "structures.csv", "lesions.csv"}
    assert len(read_csv(tmp_path / "stats" / "lesions.csv")) == 2
    assert write_statistics(statistics, tmp_path / "one.json")[0].is_file()


def test_statistics_without_image_and_inferred_labels():
    seg, _ = _scene()
    statistics = segmentation_statistics(seg)
    assert set(statistics["structures"]) == {"label_1", "label_2"}
    assert "intensity" not in statistics["structures"]["label_1"]


def test_image_on_another_grid_is_refused():
    seg, image = _scene()
    moved = Volume(image.array, np.diag([0.6, 0.5, 2.0, 1.0]), "image")
    with pytest.raises(InputError, match="not on the image's grid"):
        segmentation_statistics(seg, moved)


def test_fortran_ordered_arrays_give_identical_statistics():
    """NIfTI arrays arrive Fortran-ordered and are analysed through a transposed view."""
    seg, image = _scene()
    fortran = [Volume(np.asfortranarray(v.array), v.affine, v.role) for v in (seg, image)]
    expected = segmentation_statistics(seg, image, {"1": "organ", "2": "tumor"}, lesion_labels=["tumor"])
    got = segmentation_statistics(*fortran, {"1": "organ", "2": "tumor"}, lesion_labels=["tumor"])
    assert got["structures"]["organ"]["bbox_voxel"] == {"min": [2, 4, 1], "max": [11, 7, 2]}
    assert got["shape"] == [30, 30, 10]
    for name in ("organ", "tumor"):
        np.testing.assert_allclose(got["structures"][name]["centroid_mm"], expected["structures"][name]["centroid_mm"])
    assert sorted(lesion["long_axis_mm"] for lesion in got["lesions"]["tumor"]) == pytest.approx(
        sorted(lesion["long_axis_mm"] for lesion in expected["lesions"]["tumor"])
    )

"""DICOM reading on real data (MEDSEG_TEST_DATA): a JPEG 2000 CT series, a mosaic in 9 transfer syntaxes, a gapped series."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import InputError
from medseg.io import geometry
from medseg.io.dicom import list_dicom_series, read_dicom_series
from medseg.io.readers import read_volume
from medseg.io.volume import Volume


def sample_voxels(shape, rng, count=200) -> np.ndarray:
    corners = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    random = np.stack([rng.integers(0, n, size=count) for n in shape], axis=1)
    return np.concatenate([corners, random])


@pytest.fixture(scope="module")
def totalseg_ct(shared_data):
    folder = shared_data / "totalseg_example" / "ct_dicom"
    if not folder.is_dir():
        pytest.skip(f"totalseg_example/ct_dicom not found under {shared_data}")
    return read_volume(folder)


def test_totalseg_series_is_listed_with_its_transfer_syntax(shared_file):
    [info] = list_dicom_series(shared_file("totalseg_example/ct_dicom"))
    assert (info.slice_count, info.rows, info.columns, info.modality) == (20, 512, 512, "CT")
    assert info.transfer_syntaxes == ["1.2.840.10008.1.2.4.90"]  # JPEG 2000 lossless, via pylibjpeg-openjpeg


def test_totalseg_ct_matches_its_segmentation_grid_voxel_for_voxel(totalseg_ct, shared_file, rng):
    labels = read_volume(shared_file("totalseg_example/seg_v2/example_seg_dicom.nii.gz"), role="label")
    ct, seg = totalseg_ct.reoriented("RAS"), labels.reoriented("RAS")
    assert ct.shape == seg.shape == (512, 512, 20)
    voxels = sample_voxels(ct.shape, rng)
    distance = np.abs(geometry.voxel_to_world(ct.affine, voxels) - geometry.voxel_to_world(seg.affine, voxels)).max()
    assert distance < 1e-3
    assert totalseg_ct.array.dtype == np.int16 and totalseg_ct.array.min() == -1024  # HU after RescaleIntercept
    assert np.allclose(totalseg_ct.spacing, [0.9765625, 0.9765625, 2.0])  # 2 mm from positions, not SliceThickness 3


def test_totalseg_organs_sit_on_plausible_hounsfield_units(totalseg_ct, shared_file):
    label_map = json.loads(shared_file("totalseg_example/label_map.json").read_text())["total"]
    liver = int(next(index for index, name in label_map.items() if name == "liver"))
    seg = read_volume(shared_file("totalseg_example/seg_v2/example_seg_dicom.nii.gz"), role="label").reoriented("RAS")
    ct = totalseg_ct.reoriented("RAS")
    median = float(np.median(ct.array[seg.array == liver]))
    assert 40 <= median <= 150, median
    # Without the right row order the labels land on air/fat; most foreground must be soft tissue or bone.
    assert (ct.array[seg.array > 0] > -500).mean() > 0.9


@pytest.fixture(scope="module")
def mosaic_reference(shared_data):
    path = shared_data / "dicom_qa_ts" / "Ref" / "1.nii"
    if not path.exists():
        pytest.skip(f"dicom_qa_ts not found under {shared_data}")
    image = nib.load(path)
    return Volume(np.asarray(image.dataobj), image.affine).reoriented("RAS")


@pytest.mark.parametrize("number", range(1, 10))
def test_every_transfer_syntax_decodes_to_the_reference_mosaic_volume(number, shared_file, mosaic_reference):
    reference = nib.load(shared_file(f"dicom_qa_ts/Ref/{number}.nii"))
    reference = Volume(np.asarray(reference.dataobj), reference.affine).reoriented("RAS")
    volume = read_volume(shared_file(f"dicom_qa_ts/In/{number}.dcm"))
    assert volume.meta["mosaic_tiles"] == 35 and volume.modality == "MR"
    ours = volume.reoriented("RAS")
    assert ours.shape == reference.shape == (64, 64, 35)
    assert np.array_equal(ours.array, reference.array)
    assert np.array_equal(ours.array, mosaic_reference.array)  # and all 9 files agree with each other
    voxels = sample_voxels(ours.shape, np.random.default_rng(number))
    distance = np.linalg.norm(geometry.voxel_to_world(ours.affine, voxels) - geometry.voxel_to_world(reference.affine, voxels), axis=1)
    assert distance.max() < 0.1


def test_folder_of_mosaics_is_refused_not_stacked(shared_file):
    with pytest.raises(InputError, match="9 Siemens mosaic files"):
        read_dicom_series(shared_file("dicom_qa_ts/In"))


def test_gapped_monai_series_is_refused_naming_the_gap(shared_file):
    with pytest.raises(InputError, match=r"missing slices: a gap of 202.5 mm between slice positions -99.48 and 103.02 mm") as raised:
        read_volume(shared_file("monai_ct_dicom/CT_DICOM"))
    assert "\n" not in str(raised.value)

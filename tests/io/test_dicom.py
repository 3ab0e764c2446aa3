"""DICOM series reading and writing on synthetic, seeded series with known oblique geometry."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid
from scipy.spatial.transform import Rotation

from medseg.errors import InputError
from medseg.io import geometry
from medseg.io.dicom import list_dicom_series, read_dicom_series
from medseg.io.dicom_write import write_dicom_series
from medseg.io.readers import read_volume
from medseg.io.volume import Volume

SHAPE = (20, 16, 9)  # columns, rows, slices: all different so a transposition cannot pass
SPACING = (0.7, 0.9, 2.5)


def oblique_affine(seed_angles=(20.0, -35.0, 50.0), spacing=SPACING, origin=(-12.3, 45.6, -78.9)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", seed_angles, degrees=True).as_matrix() * np.asarray(spacing)
    affine[:3, 3] = origin
    return affine


def ct_volume(rng, shape=SHAPE, affine=None) -> Volume:
    array = rng.integers(-1024, 2500, size=shape).astype(np.int16)
    return Volume(array, oblique_affine() if affine is None else affine, meta={"modality": "CT"})


def all_centres(volume: Volume) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    return geometry.voxel_to_world(volume.affine, ijk)


def edit(path, **changes):
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)


def positions(files):
    return [np.array([float(v) for v in pydicom.dcmread(f).ImagePositionPatient]) for f in files]


@pytest.fixture
def series(tmp_path, rng):
    volume = ct_volume(rng)
    folder = tmp_path / "series"
    files = write_dicom_series(volume, folder)
    return volume, folder, files


def test_oblique_round_trip_keeps_array_and_world_coordinates(series):
    volume, folder, files = series
    assert len(files) == SHAPE[2]
    back = read_volume(folder)  # public entry: the dispatcher path
    assert back.array.dtype == np.int16
    assert np.array_equal(back.array, volume.array)
    assert np.abs(all_centres(back) - all_centres(volume)).max() < 1e-4
    assert np.allclose(back.spacing, SPACING, atol=1e-6)
    assert back.meta["format"] == "dicom" and back.meta["modality"] == "CT"
    assert back.meta["slice_spacing_source"] == "ImagePositionPatient"


def test_meta_and_files_carry_no_patient_identifiers(series):
    _, folder, files = series
    back = read_dicom_series(folder)
    forbidden = ("patient", "birth", "study_date", "name")
    assert not [key for key in back.meta if any(word in key.lower() for word in forbidden)]
    ds = pydicom.dcmread(files[0])
    assert str(ds.PatientName) == "ANONYMOUS^" and ds.PatientID == "medseg-synthetic"
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"


def test_left_handed_grid_comes_back_with_slices_reversed_at_same_world_points(tmp_path, rng):
    affine = oblique_affine()
    affine[:3, 2] *= -1  # slice axis against row x column: DICOM cannot index it that way
    volume = ct_volume(rng, affine=affine)
    write_dicom_series(volume, tmp_path)
    back = read_dicom_series(tmp_path)
    assert np.array_equal(back.array, volume.array[:, :, ::-1])
    flipped = all_centres(volume).reshape(*SHAPE, 3)[:, :, ::-1].reshape(-1, 3)
    assert np.abs(all_centres(back) - flipped).max() < 1e-4


def test_sorting_ignores_file_names_and_instance_numbers(series, rng):
    volume, folder, files = series
    names = rng.permutation(len(files))
    for k, path in enumerate(files):
        edit(path, InstanceNumber=len(files) - k)  # reversed instance order
        path.rename(folder / f"img{names[k]:03d}")  # shuffled names, no extension
    back = read_dicom_series(folder)
    assert np.array_equal(back.array, volume.array)
    assert np.abs(all_centres(back) - all_centres(volume)).max() < 1e-4


def test_rescale_slope_and_intercept_are_applied_per_slice(series):
    volume, folder, files = series
    stored = [pydicom.dcmread(f).pixel_array for f in files]
    for k, path in enumerate(files):
        edit(path, RescaleSlope=f"{0.5 + k}", RescaleIntercept="-7.25")
    back = read_dicom_series(folder)
    assert back.array.dtype == np.float32
    for k in range(len(files)):
        np.testing.assert_allclose(back.array[:, :, k], stored[k].T * (0.5 + k) - 7.25, rtol=1e-6)


def test_integer_rescale_that_overflows_int16_becomes_float(series):
    _, folder, files = series
    for path in files:
        edit(path, RescaleIntercept="40000")
    back = read_dicom_series(folder)
    assert back.array.dtype == np.float32 and back.array.min() >= 40000


def test_list_dicom_series_reports_each_series(series, tmp_path, rng):
    _, folder, _ = series
    second = ct_volume(rng, shape=(8, 6, 4), affine=np.diag([1.0, 1.0, 3.0, 1.0]))
    write_dicom_series(second, folder / "mr", modality="MR", series_description="second")
    found = list_dicom_series(folder)
    assert [info.index for info in found] == [0, 1]
    by_description = {info.description: info for info in found}
    assert by_description["second"].modality == "MR" and by_description["second"].slice_count == 4
    ct = by_description["medseg synthetic series"]
    assert (ct.rows, ct.columns, ct.slice_count) == (SHAPE[1], SHAPE[0], SHAPE[2])
    assert ct.transfer_syntaxes == ["1.2.840.10008.1.2.1"]


def test_two_series_need_a_choice_listing_both(tmp_path, rng):
    first, second = ct_volume(rng), ct_volume(rng, shape=(10, 12, 5), affine=np.diag([0.8, 0.8, 1.5, 1.0]))
    write_dicom_series(first, tmp_path / "a" / "deep", series_description="first", series_number=1)
    write_dicom_series(second, tmp_path / "b", series_description="second", series_number=2)
    uids = [info.uid for info in list_dicom_series(tmp_path)]
    with pytest.raises(InputError) as raised:
        read_dicom_series(tmp_path)
    message = str(raised.value)
    assert "\n" not in message and "2 series found" in message and "--series" in message
    assert all(uid in message for uid in uids) and "'first'" in message and "5 slices" in message
    assert np.array_equal(read_volume(tmp_path, series=uids[1]).array, second.array)
    assert np.array_equal(read_dicom_series(tmp_path, series=1).array, second.array)
    assert np.array_equal(read_dicom_series(tmp_path, series="0").array, first.array)
    with pytest.raises(InputError, match=r"no series matches '7'.*\[0\].*\[1\]"):
        read_dicom_series(tmp_path, series="7")


def test_missing_slice_is_interpolated_with_a_warning_naming_both_neighbours(series):
    volume, folder, files = series
    files[4].unlink()
    back = read_volume(folder)
    assert back.same_grid(volume)  # the regular 2.5 mm grid of the full series, slice 4 included
    kept = [k for k in range(SHAPE[2]) if k != 4]
    assert np.array_equal(back.array[:, :, kept], volume.array[:, :, kept])  # source slices come back untouched
    between = (volume.array[:, :, 3].astype(np.float64) + volume.array[:, :, 5]) / 2
    assert np.abs(back.array[:, :, 4] - between).max() <= 0.5  # the missing one: midway, rounded to int16
    assert any(w.startswith("missing slices: a gap of 5 mm") and "(files slice_0003.dcm and slice_0005.dcm)" in w
               and "about 1 missing slice(s) at the usual 2.5 mm step" in w for w in back.meta["warnings"])


def test_slices_too_far_apart_for_one_stack_are_refused_naming_the_gap(series):
    volume, folder, files = series
    normal = geometry.lps_from_affine(volume.affine)[2][:, 2]
    edit(files[-1], ImagePositionPatient=[f"{v:.6f}" for v in positions(files)[-1] + 100.0 * normal])  # 40 steps away
    with pytest.raises(InputError, match=r"missing slices: a gap of 102.5 mm .*\(files slice_0007.dcm and slice_0008.dcm\).*"
                                         r"too far apart to interpolate: a regular grid at that step would hold 49 slices for the series' 9"):
        read_volume(folder)


def test_non_uniform_spacing_is_resampled_not_refused(series):
    volume, folder, files = series
    normal = geometry.lps_from_affine(volume.affine)[2][:, 2]
    moved = positions(files)[3] + 0.8 * normal  # 0.8 mm off a 2.5 mm grid: steps 3.3 and 1.7 mm
    edit(files[3], ImagePositionPatient=[f"{v:.6f}" for v in moved])
    back = read_dicom_series(folder)
    assert back.shape[:2] == SHAPE[:2] and back.shape[2] > SHAPE[2] and back.spacing[2] <= 1.7 + 1e-6
    assert "variable slice spacing (1.7 to 3.3 mm" in back.meta["warnings"][0]
    assert np.allclose(back.origin, volume.origin, atol=1e-4)  # first slice stays where it was


def test_gantry_tilt_is_resampled_not_refused(series):
    volume, folder, files = series
    column = geometry.lps_from_affine(volume.affine)[2][:, 1]
    for k, (path, position) in enumerate(zip(files, positions(files))):
        shifted = position + k * 0.3 * column  # slices slide along the column direction: a tilted gantry
        edit(path, ImagePositionPatient=[f"{v:.6f}" for v in shifted], GantryDetectorTilt="6.8")
    back = read_dicom_series(folder)
    assert geometry.is_orthogonal(back.affine) and back.shape == (SHAPE[0], SHAPE[1] + 3, SHAPE[2])
    assert "gantry tilt of 6.84 deg" in back.meta["warnings"][0] and "GantryDetectorTilt 6.8 deg" in back.meta["warnings"][0]
    assert back.meta["gantry_detector_tilt_deg"] == 6.8


def test_tilt_tag_alone_is_accepted_when_positions_follow_the_normal(series):
    volume, folder, files = series
    for path in files:  # the tilt is already folded into ImageOrientationPatient: a plain oblique grid
        edit(path, GantryDetectorTilt="12")
    back = read_dicom_series(folder)
    assert np.array_equal(back.array, volume.array) and back.meta["gantry_detector_tilt_deg"] == 12.0


def test_duplicate_positions_are_refused_as_several_volumes(series):
    _, folder, files = series
    ds = pydicom.dcmread(files[2])
    ds.SOPInstanceUID = generate_uid()
    ds.EchoNumbers = 2
    ds.save_as(folder / "second_echo.dcm")
    with pytest.raises(InputError, match=r"duplicate slice positions: 10 slices at only 9 distinct positions \(e.g. "
                                         r"second_echo.dcm and slice_0002.dcm both at .*EchoNumbers"):
        read_dicom_series(folder)


def test_mixed_orientations_are_refused(series):
    _, folder, files = series
    edit(files[0], ImageOrientationPatient=["1", "0", "0", "0", "1", "0"])
    with pytest.raises(InputError, match="slices differ in ImageOrientationPatient"):
        read_dicom_series(folder)


def test_a_slice_without_modality_does_not_count_as_a_second_one(series):
    """Only a slice naming another modality is refused (see tests/hostile/test_dicom.py); an empty Modality says nothing."""
    volume, folder, files = series
    edit(files[4], Modality="")
    np.testing.assert_array_equal(read_dicom_series(folder).array, volume.array)
    edit(files[5], Modality="PT")
    with pytest.raises(InputError, match="Modality is PT but .* is CT: one series mixes modalities") as refused:
        read_dicom_series(folder)
    assert refused.value.path.name == files[5].name


def test_folder_without_dicom_images_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    report = pydicom.Dataset()  # a structured report: DICOM, but no image plane
    report.file_meta = pydicom.dataset.FileMetaDataset()
    report.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    report.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    report.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    report.SOPInstanceUID = report.file_meta.MediaStorageSOPInstanceUID
    report.Modality = "SR"
    report.save_as(tmp_path / "report.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match=r"no DICOM image series found \(1 not DICOM, 1 no image plane\)"):
        read_volume(tmp_path)
    assert list_dicom_series(tmp_path) == []


def test_junk_files_in_the_folder_are_ignored(series, rng):
    volume, folder, _ = series
    (folder / "README.txt").write_text("acquisition notes")
    (folder / "broken.dcm").write_bytes(rng.bytes(300))
    (folder / "sub").mkdir()
    (folder / "sub" / "empty").write_bytes(b"")
    assert np.array_equal(read_dicom_series(folder).array, volume.array)


def test_single_file_reads_one_slice(series):
    volume, _, files = series
    single = read_volume(files[3])
    assert single.shape == (SHAPE[0], SHAPE[1], 1)
    assert np.array_equal(single.array[:, :, 0], volume.array[:, :, 3])
    assert np.allclose(single.origin, geometry.voxel_to_world(volume.affine, [[0, 0, 3]])[0], atol=1e-4)
    assert single.meta["slice_spacing_source"] == "SpacingBetweenSlices"


def test_undecodable_transfer_syntax_names_file_and_syntax(series):
    _, folder, files = series
    ds = pydicom.dcmread(files[0])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder installed
    ds.PixelData = encapsulate([ds.PixelData])
    ds["PixelData"].VR = "OB"
    ds.save_as(files[0])
    with pytest.raises(InputError, match=rf"{files[0].name}: cannot decode pixel data in .*1\.2\.840\.10008\.1\.2\.4\.100"):
        read_dicom_series(folder)


def test_colour_and_multiframe_images_are_refused(series):
    _, folder, files = series
    edit(files[0], NumberOfFrames=2)
    with pytest.raises(InputError, match="multi-frame"):
        read_dicom_series(files[0])
    edit(files[1], SamplesPerPixel=3, PhotometricInterpretation="RGB")
    with pytest.raises(InputError, match="colour DICOM image"):
        read_dicom_series(files[1])


def test_monochrome1_keeps_values_and_says_so(series):
    volume, folder, files = series
    for path in files:
        edit(path, PhotometricInterpretation="MONOCHROME1")
    back = read_dicom_series(folder)
    assert np.array_equal(back.array, volume.array)
    assert back.meta["photometric_interpretation"] == "MONOCHROME1"


def test_writer_refuses_sheared_grids_and_mixing_series(tmp_path, rng):
    sheared = oblique_affine()
    sheared[:3, 2] += 0.3 * sheared[:3, 1]
    with pytest.raises(InputError, match="sheared"):
        write_dicom_series(ct_volume(rng, affine=sheared), tmp_path / "tilt")
    first = write_dicom_series(ct_volume(rng, shape=(6, 5, 4)), tmp_path / "out")
    with pytest.raises(InputError, match="already holds 4 DICOM file"):
        write_dicom_series(ct_volume(rng, shape=(6, 5, 3)), tmp_path / "out")
    smaller = ct_volume(rng, shape=(6, 5, 3))
    again = write_dicom_series(smaller, tmp_path / "out", overwrite=True)
    assert len(again) == 3 and not first[3].exists()
    assert np.array_equal(read_dicom_series(tmp_path / "out").array, smaller.array)
    shutil.copy(first[0], tmp_path / "out" / "foreign.dcm")
    with pytest.raises(InputError, match="already holds"):
        write_dicom_series(smaller, tmp_path / "out", overwrite=True)


def test_writer_quantises_float_mr_within_half_a_slope(tmp_path, rng):
    array = rng.normal(300.0, 80.0, size=(7, 6, 5)).astype(np.float32)
    write_dicom_series(Volume(array, np.diag([1.2, 1.2, 4.0, 1.0])), tmp_path, modality="MR")
    back = read_dicom_series(tmp_path)
    slope = float(pydicom.dcmread(next(tmp_path.glob("*.dcm"))).RescaleSlope)
    assert back.array.dtype == np.float32 and back.meta["modality"] == "MR"
    assert np.abs(back.array - array).max() <= slope / 2 + 1e-4

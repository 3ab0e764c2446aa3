"""DICOM-SEG output: read back with highdicom, every segment must hold exactly the mask's voxels at the
mask's world positions, and every frame must reference the source slice it lies on."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest

from medseg.errors import InputError
from medseg.io import Volume, read_volume
from medseg.io.dicom_seg import AlgorithmInfo, EmptyMaskError, write_dicom_seg
from medseg.io.dicom_write import write_dicom_series
from medseg.io.geometry import LPS_TO_RAS, affine_from_lps, world_to_voxel
from tests.io.helpers import oblique_affine


LABELS = {1: "liver", 2: "tumour", 3: "kidney_left", 4: "spleen", 5: "mystery_blob"}


def blob_mask(rng: np.random.Generator, shape, present=(1, 2, 3, 5)) -> np.ndarray:
    """Seeded boxes of several labels (label 4 deliberately absent), overlapping so later ones win."""
    array = np.zeros(shape, dtype=np.uint8)
    for label in present:
        low = [int(rng.integers(0, max(n - 3, 1))) for n in shape]
        high = [min(n, lo + int(rng.integers(2, max(n // 2, 3)))) for lo, n in zip(low, shape)]
        array[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = label
    return array


def seg_labels_in_mask_grid(seg: hd.seg.Segmentation, mask: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Mask voxel indices (N, 3) of every SEG voxel in a segment, found through world coordinates, and its segment number."""
    volume = seg.get_volume(combine_segments=True, relabel=False)
    indices = np.argwhere(volume.array > 0)
    world_ras = (LPS_TO_RAS @ volume.affine @ np.c_[indices, np.ones(len(indices))].T).T[:, :3]
    voxels = world_to_voxel(mask.affine, world_ras)
    assert np.abs(voxels - np.rint(voxels)).max(initial=0) < 1e-3, "SEG voxels fall between mask voxels"
    return np.rint(voxels).astype(int), volume.array[tuple(indices.T)]


def assert_seg_equals_mask(path, mask: Volume, labels: dict[int, str]) -> hd.seg.Segmentation:
    """Every named label is segment 1..N in label order (present or not) and holds exactly the mask's voxels."""
    seg = hd.seg.segread(path)
    named = [k for k in sorted(labels) if k]
    assert list(seg.segment_numbers) == list(range(1, len(named) + 1))
    assert [seg.get_segment_description(n).SegmentLabel for n in seg.segment_numbers] == [labels[k] for k in named]
    voxels, numbers = seg_labels_in_mask_grid(seg, mask)
    assert (voxels >= 0).all() and (voxels < np.asarray(mask.shape)).all(), "SEG voxels outside the mask grid"
    rebuilt = np.zeros(mask.shape, dtype=np.int32)
    rebuilt[tuple(voxels.T)] = np.asarray([0, *named])[numbers]  # segment number -> label value
    assert len(voxels) == int((mask.array > 0).sum())  # no voxel twice, none outside the mask
    assert np.array_equal(rebuilt, mask.array)
    return seg


def assert_frames_reference_their_slices(seg: hd.seg.Segmentation, files) -> None:
    """Each SEG frame's source reference is the slice at that frame's position."""
    by_uid = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        uid = str(ds.get("SOPInstanceUID") or ds.file_meta.MediaStorageSOPInstanceUID)
        by_uid[uid] = np.array([float(v) for v in ds.ImagePositionPatient])
    referenced = {str(item.ReferencedSOPInstanceUID) for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(by_uid)  # every source frame, not only the labelled ones
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        position = np.array([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient])
        assert np.allclose(by_uid[str(source.ReferencedSOPInstanceUID)], position, atol=1e-3)


@pytest.fixture
def oblique_series(tmp_path, rng):
    image = Volume(rng.integers(-200, 300, size=(19, 14, 9)).astype(np.int16), oblique_affine(spacing=(0.8, 1.1, 2.5)))
    files = write_dicom_series(image, tmp_path / "oblique")
    return image, files


def test_oblique_series_reads_back_voxel_for_voxel(oblique_series, tmp_path, rng):
    image, files = oblique_series
    mask = image.with_array(blob_mask(rng, image.shape), role="label")
    result = write_dicom_seg(mask, LABELS, tmp_path / "oblique", tmp_path / "seg.dcm", algorithm=AlgorithmInfo(model_id="0123abcd"))
    seg = assert_seg_equals_mask(tmp_path / "seg.dcm", mask, LABELS)
    assert_frames_reference_their_slices(seg, files)
    assert result.empty == ["spleen"] and result.generated_uids == []
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    algorithm = seg.get_segment_description(1).SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "medseg" and seg.DeviceSerialNumber == "0123abcd"


def test_lps_series_with_a_mask_stored_in_another_axis_order(tmp_path, rng):
    """An LPS-stored series, a mask permuted and flipped (RAS order): the same world voxels come back."""
    affine = affine_from_lps((0.9, 0.75, 2.0), (120.0, 80.0, -30.0), np.eye(3))
    image = Volume(rng.integers(0, 100, size=(16, 12, 7)).astype(np.int16), affine)
    files = write_dicom_series(image, tmp_path / "lps")
    mask = image.with_array(blob_mask(rng, image.shape), role="label").reoriented("RAS")
    assert mask.orientation == "RAS" and image.orientation == "LPS"
    write_dicom_seg(mask, LABELS, tmp_path / "lps", tmp_path / "seg.dcm")
    seg = assert_seg_equals_mask(tmp_path / "seg.dcm", mask, LABELS)
    assert_frames_reference_their_slices(seg, files)


def test_labelmap_type_holds_the_same_segments(oblique_series, tmp_path, rng):
    image, files = oblique_series
    mask = image.with_array(blob_mask(rng, image.shape), role="label")
    write_dicom_seg(mask, LABELS, tmp_path / "oblique", tmp_path / "seg.dcm", segmentation_type="labelmap")
    seg = assert_seg_equals_mask(tmp_path / "seg.dcm", mask, LABELS)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7"  # Label Map Segmentation Storage


def test_badly_anonymised_series_gets_uids_from_the_file_meta(oblique_series, tmp_path, rng, caplog):
    """Empty SOP/Study/Series UIDs (as in the real TotalSegmentator series), never modified on disk."""
    image, files = oblique_series
    for path in files:
        ds = pydicom.dcmread(path)
        for tag in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"):
            setattr(ds, tag, "")
        ds.save_as(path)
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    mask = image.with_array(blob_mask(rng, image.shape), role="label")
    with caplog.at_level(logging.WARNING):
        result = write_dicom_seg(mask, LABELS, tmp_path / "oblique", tmp_path / "seg.dcm")
    again = write_dicom_seg(mask, LABELS, tmp_path / "oblique", tmp_path / "seg2.dcm")
    assert result.generated_uids == ["StudyInstanceUID", "SeriesInstanceUID"]
    assert "empty StudyInstanceUID and SeriesInstanceUID" in caplog.text
    seg = assert_seg_equals_mask(tmp_path / "seg.dcm", mask, LABELS)
    assert_frames_reference_their_slices(seg, files)
    assert seg.StudyInstanceUID == hd.seg.segread(tmp_path / "seg2.dcm").StudyInstanceUID  # derived, not random
    assert again.generated_uids == result.generated_uids
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in files] == digests


@pytest.mark.parametrize("change", ["shifted", "cropped", "rotated"])
def test_mask_on_another_grid_is_refused_without_output(oblique_series, tmp_path, rng, change):
    image, _ = oblique_series
    array, affine = blob_mask(rng, image.shape), image.affine.copy()
    if change == "shifted":
        affine[:3, 3] += affine[:3, 2]  # one slice further along
    elif change == "cropped":
        array = array[:, :, :-1]
    else:
        affine = oblique_affine(spacing=(0.8, 1.1, 2.5), angles=(12.0, -7.0, 40.0))
    with pytest.raises(InputError, match="does not match the DICOM series"):
        write_dicom_seg(Volume(array, affine, "label"), LABELS, tmp_path / "oblique", tmp_path / "seg.dcm")
    assert [p.name for p in tmp_path.iterdir()] == ["oblique"]  # no SEG, no temporary file


def test_empty_mask_and_unnamed_labels_are_refused(oblique_series, tmp_path):
    """A negative study is refused with its own InputError type (the caller records why there is no SEG)."""
    image, _ = oblique_series
    empty = image.with_array(np.zeros(image.shape, np.uint8), role="label")
    with pytest.raises(EmptyMaskError, match="no labelled voxels") as refused:
        write_dicom_seg(empty, LABELS, tmp_path / "oblique", tmp_path / "seg.dcm")
    assert isinstance(refused.value, InputError) and "\n" not in str(refused.value)
    unnamed = image.with_array(np.full(image.shape, 9, np.uint8), role="label")
    with pytest.raises(InputError, match=r"label value\(s\) \[9\]"):
        write_dicom_seg(unnamed, LABELS, tmp_path / "oblique", tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()


def test_segments_carry_snomed_codes_and_laterality(oblique_series, tmp_path, rng):
    image, _ = oblique_series
    mask = image.with_array(blob_mask(rng, image.shape), role="label")
    write_dicom_seg(mask, LABELS, tmp_path / "oblique", tmp_path / "seg.dcm")
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    by_name = {seg.get_segment_description(n).SegmentLabel: seg.get_segment_description(n) for n in seg.segment_numbers}
    kidney = by_name["kidney_left"].SegmentedPropertyTypeCodeSequence[0]
    assert (kidney.CodeValue, kidney.CodingSchemeDesignator) == ("64033007", "SCT")
    assert kidney.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "7771000"  # SCT Left
    assert by_name["tumour"].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"  # morphologically abnormal
    assert by_name["mystery_blob"].SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "99MEDSEG"


def test_segment_numbers_are_the_same_in_every_case_of_a_model(oblique_series, tmp_path):
    """Segment k is the k-th label the model names, whichever labels a case holds (issue #26.5)."""
    image, _ = oblique_series
    expected = {"liver": 1, "tumour": 2, "kidney_left": 3, "spleen": 4, "mystery_blob": 5}
    for case, present in enumerate([(1, 2, 3), (2, 5), (4,)]):
        mask = image.with_array(blob_mask(np.random.default_rng(case), image.shape, present), role="label")
        result = write_dicom_seg(mask, LABELS, tmp_path / "oblique", tmp_path / f"seg{case}.dcm")
        seg = hd.seg.segread(tmp_path / f"seg{case}.dcm")
        assert {seg.get_segment_description(n).SegmentLabel: n for n in seg.segment_numbers} == expected
        assert sorted(result.empty) == sorted(LABELS[k] for k in LABELS if not (mask.array == k).any())


def test_a_label_map_with_gaps_gives_consecutive_segments_that_keep_the_value(oblique_series, tmp_path, rng):
    """DICOM wants segments 1..N without gaps: BraTS-style labels 1, 2, 4 become segments 1, 2, 3."""
    image, _ = oblique_series
    labels = {0: "background", 1: "necrosis", 2: "oedema", 4: "enhancing tumour"}
    mask = image.with_array(blob_mask(rng, image.shape, present=(2, 4)), role="label")
    write_dicom_seg(mask, labels, tmp_path / "oblique", tmp_path / "seg.dcm")
    seg = assert_seg_equals_mask(tmp_path / "seg.dcm", mask, labels)
    assert seg.get_segment_description(3).SegmentDescription == "label 4: enhancing tumour"


def _dciodvfy() -> str:
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (DICOM's validator, Debian package dicom3tools) is not installed: apt-get install -y dicom3tools")
    return tool


def dciodvfy_errors(tool: str, path) -> list[str]:
    """The error lines dciodvfy reports for a file it checked as a Segmentation."""
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=300)
    lines = (run.stdout + run.stderr).splitlines()
    assert "Segmentation" in lines, f"dciodvfy did not check it as a Segmentation: {lines[:5]}"
    return [line for line in lines if line.startswith("Error")]


def _frames_per_segment(path) -> dict[int, int]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    numbers = [int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber) for item in ds.PerFrameFunctionalGroupsSequence]
    return {int(item.SegmentNumber): numbers.count(int(item.SegmentNumber)) for item in ds.SegmentSequence}


def test_seg_with_empty_segments_passes_dciodvfy(oblique_series, tmp_path, rng):
    tool = _dciodvfy()
    image, _ = oblique_series
    mask = image.with_array(blob_mask(rng, image.shape, present=(2, 5)), role="label")
    write_dicom_seg(mask, LABELS, tmp_path / "oblique", tmp_path / "seg.dcm")
    frames = _frames_per_segment(tmp_path / "seg.dcm")
    assert sorted(frames) == [1, 2, 3, 4, 5] and frames[1] == frames[3] == frames[4] == 0 and frames[2] > 0
    assert dciodvfy_errors(tool, tmp_path / "seg.dcm") == []


def test_exact_duplicate_file_is_dropped_as_the_reader_drops_it(oblique_series, tmp_path, rng):
    """A copied file (a PACS export quirk): the reader reads the series, so the SEG writer takes it too (issue #26.3)."""
    image, files = oblique_series
    shutil.copy(files[3], files[3].with_name("copy_of_a_slice.dcm"))
    assert read_volume(tmp_path / "oblique").shape == image.shape
    mask = image.with_array(blob_mask(rng, image.shape), role="label")
    result = write_dicom_seg(mask, LABELS, tmp_path / "oblique", tmp_path / "seg.dcm")
    assert result.frames_referenced == image.shape[2]
    seg = assert_seg_equals_mask(tmp_path / "seg.dcm", mask, LABELS)
    assert_frames_reference_their_slices(seg, files)


def test_duplicates_that_differ_are_refused_by_writer_and_reader_alike(oblique_series, tmp_path, rng):
    image, files = oblique_series
    ds = pydicom.dcmread(files[3])
    pixels = ds.pixel_array.copy()
    pixels[0, 0] += 1
    ds.PixelData = pixels.tobytes()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(files[3].with_name("another_volume.dcm"))
    with pytest.raises(InputError) as reader:
        read_volume(tmp_path / "oblique")
    mask = image.with_array(blob_mask(rng, image.shape), role="label")
    with pytest.raises(InputError) as writer:
        write_dicom_seg(mask, LABELS, tmp_path / "oblique", tmp_path / "seg.dcm")
    assert writer.value.problem.startswith("duplicate slice positions") and writer.value.problem == reader.value.problem
    assert not (tmp_path / "seg.dcm").exists()


def test_slices_sharing_one_sop_instance_uid_are_refused(oblique_series, tmp_path, rng):
    """Bad anonymisation: one SOPInstanceUID for every slice would make each frame's source reference ambiguous."""
    image, files = oblique_series
    for path in files:
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.1"
        ds.save_as(path)
    assert read_volume(tmp_path / "oblique").shape == image.shape  # the reader has no use for the UIDs
    mask = image.with_array(blob_mask(rng, image.shape), role="label")
    with pytest.raises(InputError, match=r"9 of the series' 9 slices share 1 SOPInstanceUID\(s\)") as refused:
        write_dicom_seg(mask, LABELS, tmp_path / "oblique", tmp_path / "seg.dcm")
    assert refused.value.path == tmp_path / "oblique" and "\n" not in str(refused.value)
    assert not (tmp_path / "seg.dcm").exists()


def test_a_series_mixing_modalities_is_refused_as_the_reader_refuses_it(oblique_series, tmp_path, rng):
    """The writer accepts exactly what the reader accepts: CT and MR slices under one series are refused by both."""
    image, files = oblique_series
    for path in files[4:]:
        ds = pydicom.dcmread(path)
        ds.Modality = "MR"
        ds.save_as(path)
    with pytest.raises(InputError, match="mixes modalities") as by_reader:
        read_volume(tmp_path / "oblique")
    mask = image.with_array(blob_mask(rng, image.shape), role="label")
    with pytest.raises(InputError, match="mixes modalities") as by_writer:
        write_dicom_seg(mask, LABELS, tmp_path / "oblique", tmp_path / "seg.dcm")
    assert by_writer.value.problem == by_reader.value.problem and not (tmp_path / "seg.dcm").exists()


# --- the real, badly anonymised TotalSegmentator CT series -------------------------------------------
def test_real_ct_series_seg_equals_its_nifti_mask(shared_file, tmp_path, caplog):
    series = shared_file("totalseg_example/ct_dicom")
    mask = read_volume(shared_file("totalseg_example/seg_v2/example_seg_dicom.nii.gz"), role="label")
    names = json.loads(shared_file("totalseg_example/label_map.json").read_text())["total"]
    labels = {int(k): v for k, v in names.items()}
    files = sorted(p for p in series.iterdir() if p.is_file())
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]
    with caplog.at_level(logging.WARNING):
        result = write_dicom_seg(mask, labels, series, tmp_path / "seg.dcm", algorithm=AlgorithmInfo(name="TotalSegmentator", version="2"))
    present = sorted(int(v) for v in np.unique(mask.array) if v)
    assert [s.label for s in result.segments] == list(range(1, 118))  # every structure of the model, 86 of them empty
    assert [s.label for s in result.segments if s.voxels] == present and len(present) == 31 and len(result.empty) == 86
    assert result.generated_uids == ["StudyInstanceUID", "SeriesInstanceUID"] and "derived from its SOP instance UIDs" in caplog.text
    seg = assert_seg_equals_mask(tmp_path / "seg.dcm", mask, labels)
    assert_frames_reference_their_slices(seg, files)  # SOP instance UIDs came from the file meta
    frame_of_reference = pydicom.dcmread(files[0], stop_before_pixels=True).FrameOfReferenceUID
    assert seg.FrameOfReferenceUID == frame_of_reference
    liver = next(n for n in seg.segment_numbers if seg.get_segment_description(n).SegmentLabel == "liver")
    assert seg.get_segment_description(liver).SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in files] == digests


def test_real_ct_seg_passes_dciodvfy_with_standard_codes(shared_file, tmp_path):
    """DICOM's validator finds no error in the SEG of the real CT (117 segments, 86 of them empty), and every
    segment carries a SNOMED CT type (none the private 99MEDSEG code)."""
    tool = _dciodvfy()
    mask = read_volume(shared_file("totalseg_example/seg_v2/example_seg_dicom.nii.gz"), role="label")
    names = json.loads(shared_file("totalseg_example/label_map.json").read_text())["total"]
    write_dicom_seg(mask, {int(k): v for k, v in names.items()}, shared_file("totalseg_example/ct_dicom"), tmp_path / "seg.dcm",
                    algorithm=AlgorithmInfo(name="TotalSegmentator", version="2"))
    assert dciodvfy_errors(tool, tmp_path / "seg.dcm") == []
    segments = pydicom.dcmread(tmp_path / "seg.dcm", stop_before_pixels=True).SegmentSequence
    assert len(segments) == 117 and {item.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator for item in segments} == {"SCT"}


def test_series_is_picked_from_a_folder_holding_several(tmp_path, rng):
    first = Volume(np.zeros((8, 6, 4), np.int16), oblique_affine())
    second = Volume(np.zeros((10, 7, 5), np.int16), oblique_affine(spacing=(1.0, 1.0, 2.0)))
    write_dicom_series(first, tmp_path / "study" / "a", series_number=1)
    files = write_dicom_series(second, tmp_path / "study" / "b", series_number=2)
    mask = second.with_array(blob_mask(rng, second.shape), role="label")
    with pytest.raises(InputError, match="2 series found"):
        write_dicom_seg(mask, LABELS, tmp_path / "study", tmp_path / "seg.dcm")
    write_dicom_seg(mask, LABELS, tmp_path / "study", tmp_path / "seg.dcm", series=1)
    assert_frames_reference_their_slices(assert_seg_equals_mask(tmp_path / "seg.dcm", mask, LABELS), files)


def _source_labels(files) -> dict[str, np.ndarray]:
    """Each source slice's labels, (rows, columns), by SOP instance UID."""
    return {str(ds.SOPInstanceUID): ds.pixel_array for ds in (pydicom.dcmread(path) for path in files)}


@pytest.mark.parametrize("layout", ["tilted", "uneven"])
def test_tilted_or_uneven_series_gets_frames_on_its_own_slices(tmp_path, rng, layout):
    """The mask medseg reads such a series into lies on a resampled regular grid; each SEG frame still lies on its
    source slice and holds that slice's labels exactly (a label series written with the same geometry is the truth)."""
    affine = oblique_affine(spacing=(0.8, 1.1, 2.5))
    labels_on_slices = blob_mask(rng, (19, 14, 9))
    ks = np.arange(9)
    column = affine[:3, 1] / np.linalg.norm(affine[:3, 1])
    if layout == "tilted":  # origins slide along the column direction: a 9 deg gantry tilt
        origins = affine[:3, 3] + ks[:, None] * affine[:3, 2] + (ks * 2.5 * np.tan(np.radians(9.0)))[:, None] * column
    else:  # 2.5 mm steps with two slices missing (5 mm gaps) and one 3.1 mm step
        steps = np.array([0, 2.5, 5.0, 2.5, 3.1, 2.5, 5.0, 2.5, 2.5]).cumsum()
        origins = affine[:3, 3] + (steps / 2.5)[:, None] * affine[:3, 2]
    files = write_dicom_series(Volume(labels_on_slices, affine), tmp_path / layout, modality="MR", slice_origins=origins)
    mask = read_volume(tmp_path / layout, role="label")
    assert mask.shape != labels_on_slices.shape and mask.meta["warnings"]  # it was resampled
    labels = {1: "liver", 2: "spleen", 3: "left kidney", 4: "pancreas", 5: "tumor"}
    result = write_dicom_seg(mask, labels, tmp_path / layout, tmp_path / "seg.dcm")
    assert result.frames_referenced == 9
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert_frames_reference_their_slices(seg, files)
    truth = _source_labels(files)
    uids = list(truth)
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True, relabel=False,
                                                skip_overlap_checks=True, ignore_spatial_locations=True)
    present = [0, *sorted(labels)]  # segment number -> label value
    for uid, frame in zip(uids, pixels):
        assert np.array_equal(np.asarray(present)[frame], truth[uid])

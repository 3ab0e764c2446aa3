"""Preprocessing: orientation invariance, crop, normalization, resampling, exact inversion, cache, CLI.

Round-trip assertions (what is claimed, exactly):
* resampling-free path (target spacing = case spacing): ``invert_to_raw(seg)`` equals the raw label
  voxel for voxel, for RAS, LPS and permuted storage and both label methods;
* 2 mm -> 1 mm (integer factor): exact for nearest; Dice > 0.99 per class for per-class linear
  (linear weights can flip a rare boundary voxel);
* non-integer upsampling of anisotropic data (z resampled separately): Dice > 0.99 per class;
* downsampling loses detail by nature: Dice > 0.9 per class only.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from medseg.cli.dataset_cmds import register
from medseg.data.cache import cached_case_ids, case_paths, load_case, preprocess_dataset
from medseg.data.dataset import load_dataset, read_case_images, read_case_label
from medseg.data.fingerprint import compute_fingerprint
from medseg.data.plan import make_plan
from medseg.data.config import PlanConfig
from medseg.data.preprocess import nonzero_bbox, preprocess_volume
from tests.data.reference_inverse import invert_to_raw, raw_affine
from medseg.data.resample import kind_for_role, resample_3d, separate_axis
from medseg.errors import InputError
from medseg.io.volume import Volume
from tests.data._builders import dice, make_msd, phantom, ras_affine, store_as


def _plan(root, **overrides):
    description = load_dataset(root)
    return description, make_plan(description, compute_fingerprint(description, workers=1, progress=False), PlanConfig(**overrides))


def _run_case(description, plan, index=0):
    case = description.cases[index]
    label = read_case_label(case)
    return preprocess_volume(read_case_images(case, description.num_channels), plan, label=label, case_id=case.case_id), label


@pytest.mark.parametrize("method", ["nearest", "per_class_linear"])
def test_same_world_case_in_any_storage_order_preprocesses_identically(tmp_path, method):
    roots = {code: make_msd(tmp_path / code, cases=1, spacings=[(1.5, 1.0, 2.0)], orientations=[code]) for code in ("RAS", "LPS", "PSR")}
    results = {}
    for code, root in roots.items():
        description, plan = _plan(root, target_spacing=[1.0, 1.0, 1.5], label_resampling=method)
        results[code], _ = _run_case(description, plan)
    reference = results["RAS"]
    for code in ("LPS", "PSR"):
        assert results[code].image.shape == reference.image.shape
        assert np.allclose(results[code].image, reference.image, atol=1e-4)
        assert np.array_equal(results[code].seg, reference.seg)
        assert np.allclose(results[code].properties.geometry.resampled_affine, reference.properties.geometry.resampled_affine)


@pytest.mark.parametrize("code", ["RAS", "LPS", "PSR"])
@pytest.mark.parametrize("method", ["nearest", "per_class_linear"])
def test_round_trip_without_resampling_is_exact(tmp_path, code, method):
    root = make_msd(tmp_path / "ds", cases=1, modality="MR", spacings=[(1.0, 1.2, 2.0)], orientations=[code], shape=(30, 26, 16))
    description, plan = _plan(root, target_spacing=[1.0, 1.2, 2.0], label_resampling=method)
    result, label = _run_case(description, plan)
    props = result.properties
    assert props.geometry.resampled_shape == props.geometry.cropped_shape
    assert props.geometry.cropped_shape != props.geometry.ras_shape  # MR: the zero background was cropped
    back = invert_to_raw(result.seg, props.geometry, "label_nearest" if method == "nearest" else "label_linear")
    assert back.shape == label.shape and back.dtype == label.array.dtype
    assert np.array_equal(back, label.array)
    assert np.allclose(raw_affine(props.geometry), label.affine)


@pytest.mark.parametrize("method, kind", [("nearest", "label_nearest"), ("per_class_linear", "label_linear")])
def test_round_trip_with_integer_upsampling(tmp_path, method, kind):
    root = make_msd(tmp_path / "ds", cases=1, spacings=[(2.0, 2.0, 2.0)], orientations=["LPS"], shape=(20, 18, 14))
    description, plan = _plan(root, target_spacing=[1.0, 1.0, 1.0], label_resampling=method)
    result, label = _run_case(description, plan)
    assert result.geometry.resampled_shape == (40, 36, 28)
    assert result.geometry.spacing_after == pytest.approx([1.0, 1.0, 1.0])
    back = invert_to_raw(result.seg, result.geometry, kind)
    if method == "nearest":
        assert np.array_equal(back, label.array)
    else:
        assert min(dice(back, label.array, value) for value in (1, 2)) > 0.99


@pytest.mark.parametrize("method, kind", [("nearest", "label_nearest"), ("per_class_linear", "label_linear")])
@pytest.mark.parametrize("target, minimum", [([0.7, 0.7, 1.7], 0.99), ([1.3, 1.3, 1.7], 0.9)])
def test_round_trip_with_non_integer_and_anisotropic_resampling_keeps_dice(tmp_path, method, kind, target, minimum):
    root = make_msd(tmp_path / "ds", cases=1, spacings=[(0.9, 0.9, 4.0)], orientations=["PSR"], shape=(60, 56, 12))
    description, plan = _plan(root, target_spacing=target, label_resampling=method)
    result, label = _run_case(description, plan)
    assert result.geometry.separate_axis == 2  # 4.0 / 0.9 > 3: z is resampled on its own
    back = invert_to_raw(result.seg, result.geometry, kind)
    assert back.shape == label.shape
    assert min(dice(back, label.array, value) for value in (1, 2)) > minimum


def test_out_of_plane_axis_uses_nearest_slices():
    image = np.random.default_rng(0).normal(size=(8, 8, 4)).astype(np.float32)
    axis = separate_axis([1.0, 1.0, 5.0], [1.0, 1.0, 2.5])
    assert axis == 2
    out = resample_3d(image, (8, 8, 8), "image", axis=axis, out_of_plane_order=0)
    for k in range(8):  # every output slice is a copy of a source slice (no blending across thick slices)
        assert any(np.allclose(out[:, :, k], image[:, :, j], atol=1e-5) for j in range(4))


def test_probabilities_invert_with_background_outside_the_crop(tmp_path):
    root = make_msd(tmp_path / "ds", cases=1, modality="MR", shape=(30, 26, 16), orientations=["LPS"])
    description, plan = _plan(root, target_spacing=[1.0, 1.0, 1.0])
    result, label = _run_case(description, plan)
    onehot = np.stack([(result.seg == c).astype(np.float32) for c in range(3)])
    probabilities = invert_to_raw(onehot, result.geometry, "probabilities")
    assert probabilities.shape == (3, *label.shape)
    assert np.array_equal(probabilities.argmax(0), label.array)
    assert np.allclose(probabilities.sum(0), 1.0, atol=1e-5)


def test_crop_never_cuts_labels():
    image = np.zeros((1, 10, 10, 10), np.float32)
    image[0, 2:5, 2:5, 2:5] = 1
    label = np.zeros((10, 10, 10), np.uint8)
    label[8, 8, 8] = 1  # labelled where the image is zero
    assert nonzero_bbox(image, label) == [[2, 9], [2, 9], [2, 9]]
    assert nonzero_bbox(np.zeros((1, 4, 4, 4))) == [[0, 4], [0, 4], [0, 4]]


def test_normalization_ct_and_masked_zscore(tmp_path):
    description, plan = _plan(make_msd(tmp_path / "ct", cases=2))
    norm = plan.preprocessing.normalization[0]
    result, _ = _run_case(description, plan)
    lo, hi = norm.clip
    assert result.image.min() >= (lo - norm.mean) / norm.std - 0.2  # cubic overshoot is small
    assert result.image.max() <= (hi - norm.mean) / norm.std + 0.2
    description, plan = _plan(make_msd(tmp_path / "mr", cases=1, modality="MR", shape=(40, 40, 30)), target_spacing=[1, 1, 1])
    plan.preprocessing.normalization[0].use_nonzero_mask = True
    case = description.cases[0]
    volume = read_case_images(case, 1)[0]
    result = preprocess_volume([volume], plan, case_id=case.case_id)
    values = result.image[0]
    inside = values != 0
    assert abs(values[inside].mean()) < 0.05 and abs(values[inside].std() - 1) < 0.05
    assert result.seg is None and result.properties.class_locations == {}


def test_inference_case_without_label_and_nan_refusal(tmp_path):
    description, plan = _plan(make_msd(tmp_path / "ds", cases=1))
    image, _ = phantom()
    volume = Volume(image, ras_affine(), meta={"source": "scan.nii.gz"})
    result = preprocess_volume(volume, plan)
    assert result.seg is None and result.image.dtype == np.float32 and result.image.ndim == 4
    image[3, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        preprocess_volume(Volume(image, ras_affine(), meta={"source": "scan.nii.gz"}), plan)


def test_label_resampling_kind_is_never_implicit():
    with pytest.raises(ValueError, match="explicit"):
        kind_for_role("label", None)
    assert kind_for_role("label", "nearest") == "label_nearest"
    assert kind_for_role("image", None) == "image"
    with pytest.raises(ValueError):
        resample_3d(np.zeros((2, 2, 2), np.uint8), (4, 4, 4), "linear")  # type: ignore[arg-type]


def test_class_locations_are_voxels_of_their_class(tmp_path):
    description, plan = _plan(make_msd(tmp_path / "ds", cases=1), class_locations_per_class=50)
    result, _ = _run_case(description, plan)
    for value, coordinates in result.properties.class_locations.items():
        assert 0 < len(coordinates) <= 50
        assert all(result.seg[tuple(c)] == int(value) for c in coordinates)


# --- cache ---------------------------------------------------------------------------------------
def test_cache_is_idempotent_memory_mappable_and_invalidated_by_a_new_plan(tmp_path, caplog):
    root = make_msd(tmp_path / "ds", cases=3, orientations=["RAS", "LPS", "PSR"])
    description, plan = _plan(root)
    cache = tmp_path / "cache"
    first = preprocess_dataset(description, plan, cache, workers=1, progress=False)
    assert sorted(first.processed) == ["case_000", "case_001", "case_002"] and not first.failed
    image, seg, props = load_case(cache, "case_001")
    assert isinstance(image, np.memmap) and image.dtype == np.float32 and image.ndim == 4
    assert seg.dtype == np.uint8 and seg.shape == image.shape[1:]
    assert props.preprocessing_hash == plan.preprocessing_identity("3d")
    assert not list(cache.glob(".*tmp*"))  # atomic writes leave no temporary files
    second = preprocess_dataset(description, plan, cache, workers=1, progress=False)
    assert second.processed == [] and len(second.skipped) == 3
    case_paths(cache, "case_002")["done"].unlink()  # an interrupted case (marker is written last)
    third = preprocess_dataset(description, plan, cache, workers=1, progress=False)
    assert third.processed == ["case_002"]
    _, changed = _plan(root, target_spacing=[2.0, 2.0, 2.0])
    fourth = preprocess_dataset(description, changed, cache, workers=1, progress=False)
    assert "plan changed" in fourth.invalidated and len(fourth.processed) == 3
    assert load_case(cache, "case_000")[0].shape[1:] == tuple(load_case(cache, "case_000")[2].geometry.resampled_shape)
    assert json.loads((cache / "plan.json").read_text())["target_spacing"] == [2.0, 2.0, 2.0]
    assert cached_case_ids(cache) == ["case_000", "case_001", "case_002"]


def test_failing_case_is_reported_with_its_file_and_others_finish(tmp_path):
    root = make_msd(tmp_path / "ds", cases=3)
    description, plan = _plan(root)
    (root / "imagesTr" / "case_001.nii.gz").write_bytes(b"\x1f\x8b broken")
    report = preprocess_dataset(description, plan, tmp_path / "cache", workers=2, progress=False)
    assert sorted(report.processed) == ["case_000", "case_002"]
    assert list(report.failed) == ["case_001"]
    assert "case_001.nii.gz" in report.failed["case_001"]


def test_cli_preprocess_plans_when_needed_and_skips_on_rerun(tmp_path, monkeypatch):
    root = make_msd(tmp_path / "ds", cases=2)
    monkeypatch.chdir(tmp_path)
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    result = runner.invoke(app, ["preprocess", str(root), "-j", "1"])
    assert result.exit_code == 0, result.output
    cache = tmp_path / "medseg_work" / "TinyCT" / "preprocessed"
    assert cached_case_ids(cache) == ["case_000", "case_001"]
    assert (tmp_path / "medseg_work" / "TinyCT" / "plans.json").is_file()
    again = runner.invoke(app, ["preprocess", str(root), "--plan", str(tmp_path / "medseg_work" / "TinyCT" / "plans.json"), "--cache", str(cache), "-j", "1"])
    assert again.exit_code == 0 and "2 already done" in " ".join(again.output.split())
    (root / "labelsTr" / "case_001.nii.gz").unlink()
    (cache / "case_001.done").unlink()
    failed = runner.invoke(app, ["preprocess", str(root), "--cache", str(cache), "-j", "1"])
    assert failed.exit_code == 1 and "case_001" in failed.output


def test_parallel_map_reports_exceptions_and_dead_workers_per_case():
    from medseg.data.parallel import map_cases
    from tests.data._builders import square_or_die

    outcomes = {o.key: o for o in map_cases(square_or_die, [("a", 2), ("b", 7), ("c", 3)], workers=2, progress=False)}
    assert outcomes["a"].value == 4 and outcomes["c"].value == 9
    assert "ValueError: seven is not allowed" in outcomes["b"].error
    outcomes = {o.key: o for o in map_cases(square_or_die, [("x", 13), ("y", 2)], workers=2, progress=False)}
    assert "worker process died" in outcomes["x"].error
    assert set(outcomes) == {"x", "y"}


@pytest.mark.parametrize("builder", ["nnunet", "msd_4d"])
def test_multichannel_datasets_preprocess_every_channel(tmp_path, builder):
    from tests.data._builders import make_msd_4d, make_nnunet

    root = make_nnunet(tmp_path / "nn") if builder == "nnunet" else make_msd_4d(tmp_path / "brain")
    description, plan = _plan(root)
    assert [n.scheme for n in plan.preprocessing.normalization] == ["zscore", "zscore"]
    report = preprocess_dataset(description, plan, tmp_path / "cache", workers=1, progress=False)
    assert not report.failed
    image, seg, _ = load_case(tmp_path / "cache", description.cases[0].case_id)
    assert image.shape[0] == 2 and image.shape[1:] == seg.shape


def test_plan_of_another_dataset_is_refused(tmp_path):
    from tests.data._builders import make_msd_4d

    _, plan = _plan(make_msd(tmp_path / "ct", cases=1))
    other = load_dataset(make_msd_4d(tmp_path / "brain"))
    with pytest.raises(InputError, match="does not match the plan"):
        preprocess_dataset(other, plan, tmp_path / "cache", workers=1, progress=False)


def test_dicom_series_folder_case_checks_and_preprocesses(tmp_path):
    from medseg.data.check import check_dataset
    from medseg.io.dicom_write import write_dicom_series
    from tests.data._builders import save_nifti

    root = make_msd(tmp_path / "ds", cases=1)
    image, label = phantom(seed=5)
    image, affine = store_as(np.rint(image), ras_affine((0.8, 0.8, 2.0), origin=(4.0, 2.0, -7.0)), "LPS")
    label, _ = store_as(label, ras_affine((0.8, 0.8, 2.0), origin=(4.0, 2.0, -7.0)), "LPS")
    write_dicom_series(Volume(image.astype(np.int16), affine), root / "imagesTr" / "case_dcm")
    save_nifti(label, affine, root / "labelsTr" / "case_dcm.nii.gz")
    data = json.loads((root / "dataset.json").read_text())
    data["training"].append({"image": "./imagesTr/case_dcm", "label": "./labelsTr/case_dcm.nii.gz"})
    (root / "dataset.json").write_text(json.dumps(data))
    assert [p for p in check_dataset(root) if p.severity == "error"] == []
    description, plan = _plan(root)
    report = preprocess_dataset(description, plan, tmp_path / "cache", workers=1, progress=False, case_ids=["case_dcm"])
    assert report.processed == ["case_dcm"], report.failed
    _, seg, props = load_case(tmp_path / "cache", "case_dcm")
    raw = read_case_label(description.case("case_dcm"))
    kind = "label_linear"
    assert min(dice(invert_to_raw(np.asarray(seg), props.geometry, kind), raw.array, v) for v in (1, 2)) > 0.95


def test_undeclared_label_values_are_refused(tmp_path):
    description, plan = _plan(make_msd(tmp_path / "ds", cases=1))
    image, label = phantom()
    label[0, 0, 0] = 7
    with pytest.raises(InputError, match=r"\[7\]"):
        preprocess_volume(Volume(image, ras_affine()), plan, label=Volume(label, ras_affine(), "label", {"source": "lab.nii.gz"}))


def test_ignore_label_is_resampled_nearest_and_never_blended():
    from medseg.data.preprocess import resample_label
    from medseg.data.resample import resample_3d

    seg = np.zeros((6, 6, 6), np.uint8)
    seg[1:4, 1:4, 1:4] = 1
    seg[3:6, 3:6, 3:6] = 3  # unannotated, touching class 1
    out = resample_label(seg, (11, 11, 11), "per_class_linear", None, ignore_label=3)
    nearest_ignore = resample_3d((seg == 3).astype(np.uint8), (11, 11, 11), "label_nearest", axis=None).astype(bool)
    assert np.array_equal(out == 3, nearest_ignore)  # the ignore region is exactly its nearest-neighbour image
    assert set(np.unique(out)) <= {0, 1, 3}
    plain = resample_label(np.where(seg == 3, 0, seg), (11, 11, 11), "per_class_linear", None, ignore_label=None)
    assert np.array_equal(out[~nearest_ignore], plain[~nearest_ignore])  # classes resampled as if ignore were background

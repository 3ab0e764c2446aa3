"""End-to-end inference with a tiny trained model: geometry, DICOM, Dice, failures, outputs, ensembles."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.errors import InputError
from medseg.infer import InferConfig, InferFailures, infer, load_model
from medseg.infer.predictor import WindowSpec, mirror_sets, predict_probabilities
from medseg.runtime import resolve_runtime, runtime_scope
from medseg.train.checkpoint import load_checkpoint
from medseg.io import Volume, read_volume, write_volume
from medseg.io.dicom_write import write_dicom_series
from medseg.io.geometry import corner_points
from tests.infer.conftest import two_fold_ensemble

FAST = InferConfig(threads=1, prefetch=True)


def _test_image(trained, index: int = 4) -> Volume:
    return read_volume(trained["dataset"] / "imagesTs" / f"case_{index:03d}.nii.gz")


def _in_ras(labels: np.ndarray, reference: Volume) -> Volume:
    return Volume(labels, reference.affine, "label").reoriented("RAS")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


@pytest.fixture(scope="module")
def reference_mask(trained, segmenter) -> Volume:
    image = _test_image(trained)
    return _in_ras(segmenter.predict(image).labels, image)


@pytest.mark.parametrize("orientation", ["LPS", "RAI", "PSR", "ILA"])
def test_masks_agree_in_world_space_for_any_storage_order(trained, segmenter, reference_mask, orientation):
    stored = _test_image(trained).reoriented(orientation)  # same world grid, other voxel order
    assert stored.orientation == orientation
    other = _in_ras(segmenter.predict(stored).labels, stored)
    assert np.allclose(corner_points(reference_mask.shape, reference_mask.affine), corner_points(other.shape, other.affine), atol=1e-4)
    assert (reference_mask.array > 0).sum() > 100  # the model finds something, so the comparison means something
    np.testing.assert_array_equal(reference_mask.array, other.array)


def test_dicom_series_and_its_nifti_give_identical_masks(trained, segmenter, tmp_path):
    image = _test_image(trained, 5)
    nifti = write_volume(image, tmp_path / "ct.nii.gz")
    write_dicom_series(image, tmp_path / "ct_dicom", modality="CT")
    infer(segmenter.model, nifti, tmp_path / "out", FAST, segmenter=segmenter)
    infer(segmenter.model, tmp_path / "ct_dicom", tmp_path / "out", FAST, segmenter=segmenter)
    from_nifti = read_volume(tmp_path / "out" / "ct.nii.gz", role="label")
    from_dicom = read_volume(tmp_path / "out" / "ct_dicom.nii.gz", role="label")
    dicom_input = read_volume(tmp_path / "ct_dicom")
    assert from_dicom.shape == dicom_input.shape and np.allclose(from_dicom.affine, dicom_input.affine, atol=1e-4)
    a, b = from_nifti.reoriented("RAS"), from_dicom.reoriented("RAS")
    assert np.allclose(corner_points(a.shape, a.affine), corner_points(b.shape, b.affine), atol=1e-3)
    np.testing.assert_array_equal(a.array, b.array)


def test_mask_grid_equals_anisotropic_input_grid(trained, segmenter, tmp_path):
    """0.9 x 0.7 x 5 mm LPS input, model at 2 x 2 x 3 mm: the mask has the input's shape, affine and header codes."""
    image = _test_image(trained).reoriented("RAS")
    new_spacing = np.array([0.9, 0.7, 5.0])
    new_shape = np.floor(np.array(image.shape) * image.spacing / new_spacing).astype(int)
    index = [np.minimum((np.arange(n) * new_spacing[a] / image.spacing[a]).astype(int), image.shape[a] - 1) for a, n in enumerate(new_shape)]
    array = image.array[np.ix_(*index)]  # nearest-neighbour resampling by index: a valid CT on the new grid
    affine = np.diag([*new_spacing, 1.0])
    affine[:3, 3] = image.affine[:3, 3]
    anisotropic = Volume(array, affine, meta={"modality": "CT"}).reoriented("LPS")
    path = write_volume(anisotropic, tmp_path / "aniso.nii.gz")
    infer(segmenter.model, path, tmp_path / "out", FAST, segmenter=segmenter)
    written = nib.load(tmp_path / "out" / "aniso.nii.gz")
    source = nib.load(path)
    assert written.shape == source.shape == anisotropic.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
    assert int(written.header["sform_code"]) == int(source.header["sform_code"])
    assert int(written.header["qform_code"]) == int(source.header["qform_code"])
    assert anisotropic.spacing.max() / anisotropic.spacing.min() > 3 and not np.allclose(anisotropic.spacing, [2, 2, 3])


def test_dice_matches_the_validation_dice_in_the_checkpoint(trained, segmenter):
    """Inference on the validation case reproduces the Dice the trainer stored.

    Training validates on the preprocessed grid (2 x 2 x 3 mm, resampled label); inference is scored
    on the raw grid after resampling probabilities back. The same network sees the same
    preprocessed image, so only boundary voxels can change between the two grids. Tolerance 0.05
    absolute: the validation liver (~15k voxels) has ~18% of its voxels on its surface, and
    boundary disagreements of a few percent of them move Dice by a few hundredths; geometry
    errors cost far more (a left-right flip of the mask alone drops Dice to ~0.1).
    """
    payload = load_checkpoint(trained["run"] / "checkpoint_last.pt")  # the final weights, which the segmenter serves, and their final validation
    stored = payload.validation.dice["1"]
    assert stored > 0.3, "the fixture model learned too little for this comparison"
    scores = []
    for case in payload.val_cases:  # the final validation covers every case of the fold
        image = read_volume(trained["dataset"] / "imagesTr" / f"{case}.nii.gz")
        label = read_volume(trained["dataset"] / "labelsTr" / f"{case}.nii.gz", role="label").array
        scores.append(_dice(segmenter.predict(image).labels == 1, label == 1))
    assert abs(float(np.mean(scores)) - stored) < 0.05


def test_folder_with_a_corrupt_case(trained, segmenter, tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    for index in (4, 5):
        shutil.copy(trained["dataset"] / "imagesTs" / f"case_{index:03d}.nii.gz", cases)
    good = (cases / "case_004.nii.gz").read_bytes()
    (cases / "broken.nii.gz").write_bytes(good[: len(good) // 3])  # truncated gzip
    out = tmp_path / "out"
    with pytest.raises(InferFailures, match=r"1 of 3 case\(s\) failed \(broken: .*broken.nii.gz") as caught:
        infer(segmenter.model, cases, out, FAST, segmenter=segmenter)
    report = caught.value.report
    assert sorted(report.outputs) == ["case_004", "case_005"] and list(report.failed) == ["broken"]
    assert sorted(p.name for p in out.iterdir()) == ["case_004.json", "case_004.nii.gz", "case_005.json", "case_005.nii.gz", "infer_summary.json"]
    summary = json.loads((out / "infer_summary.json").read_text())
    assert summary["written"] == ["case_004", "case_005"] and list(summary["failed"]) == ["broken"]


def test_cli_exit_code_is_nonzero_when_a_case_fails(trained, tmp_path, capsys):
    from medseg.cli import infer_cmd, main

    if not any(getattr(command.callback, "__name__", "") == "infer" for command in main.app.registered_commands):
        infer_cmd.register(main.app)
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copy(trained["dataset"] / "imagesTs" / "case_004.nii.gz", cases)
    (cases / "bad.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(SystemExit) as exit_info:
        main.main(["infer", str(trained["run"]), str(cases), "-o", str(tmp_path / "out"), "--set", "infer.threads=1"])
    assert exit_info.value.code == 2
    assert "1 of 2 case(s) failed (bad:" in capsys.readouterr().err.replace("\n", "")
    assert (tmp_path / "out" / "case_004.nii.gz").is_file() and not (tmp_path / "out" / "bad.nii.gz").exists()


def test_input_errors(segmenter, trained):
    image = _test_image(trained)
    two_channels = Volume(np.stack([image.array, image.array], axis=-1), image.affine)
    with pytest.raises(InputError, match="has 2 channel"):
        segmenter.predict(two_channels)
    with pytest.raises(InputError, match="2D image"):
        segmenter.predict(Volume(image.array[:, :, :1], image.affine))


def test_outputs_and_sidecar(trained, segmenter, tmp_path):
    config = InferConfig(threads=1, per_class=True, save_probabilities=True, postprocess={"liver": {"largest_component": True}})
    source = trained["dataset"] / "imagesTs" / "case_005.nii.gz"
    report = infer(trained["run"], source, tmp_path / "mask.nii.gz", config)  # a file name for a single case
    assert sorted(p.name for p in report.outputs["case_005"]) == ["liver.nii.gz", "mask.json", "mask.nii.gz", "mask_probabilities.npz", "tumor.nii.gz"]
    mask = read_volume(tmp_path / "mask.nii.gz", role="label")
    image = read_volume(source)
    sidecar = json.loads((tmp_path / "mask.json").read_text())
    voxel_ml = float(np.prod(image.spacing)) / 1000
    for name, index in (("liver", 1), ("tumor", 2)):
        voxels = int((mask.array == index).sum())
        assert sidecar["labels"][name]["voxels"] == voxels
        assert sidecar["labels"][name]["volume_ml"] == pytest.approx(voxels * voxel_ml, abs=1e-3)
        np.testing.assert_array_equal(read_volume(tmp_path / "mask" / f"{name}.nii.gz", role="label").array, mask.array == index)
    assert "lesions" in sidecar["labels"]["tumor"] and "lesions" not in sidecar["labels"]["liver"]
    assert sidecar["model"]["name"] == "dynunet" and sidecar["model"]["folds"] == [0] and len(sidecar["model"]["id"]) == 12
    assert sidecar["medseg_version"] and sidecar["runtime_s"]["total"] > 0 and sidecar["settings"]["overlap"] == 0.5
    assert sidecar["input"]["shape"] == list(image.shape)
    text = json.dumps(sidecar)
    assert str(trained["dataset"]) not in text and "imagesTs" not in text  # no source paths
    with np.load(tmp_path / "mask_probabilities.npz") as saved:
        probabilities = saved["probabilities"]
        assert probabilities.dtype == np.float16 and probabilities.shape == (3, *image.shape)
        assert list(saved["labels"]) == ["background", "liver", "tumor"]
    kept = mask.array == 1
    # postprocessing only removes liver voxels, never adds them (1e-3: float16 storage can tie two classes)
    assert np.all(probabilities[1][kept] >= probabilities.max(0)[kept] - 1e-3)
    from medseg.metrics.lesions import components

    assert len(components(kept)[1]) <= 1


def test_fold_ensemble_averages_softmax(trained, tmp_path):
    folds = two_fold_ensemble(trained["run"], tmp_path / "folds")
    ensemble = load_model(folds)
    assert len(ensemble.networks) == 2 and ensemble.folds == [0, 1]
    runtime = resolve_runtime("cpu", "off", 1)
    spec = WindowSpec(ensemble.patch_size, 0.5, 1)
    image = np.random.default_rng(0).normal(size=(1, 40, 44, 20)).astype(np.float32)
    cpu = torch.device("cpu")
    with runtime_scope(runtime):
        averaged = predict_probabilities(ensemble.networks, image, spec, runtime, cpu, 3)
        singles = [predict_probabilities(load_model(folds / f"fold_{fold}").networks, image, spec, runtime, cpu, 3) for fold in (0, 1)]
    assert not torch.allclose(singles[0], singles[1], atol=1e-3)
    torch.testing.assert_close(averaged, (singles[0] + singles[1]) / 2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(averaged.sum(0), torch.ones(averaged.shape[1:]), atol=1e-4, rtol=0)


def test_tta_undoes_its_flips(segmenter):
    """With one window covering the image, mirrored TTA is exactly flip-equivariant only if every flip is undone."""
    model = segmenter.model
    image = torch.randn(1, *model.patch_size, generator=torch.Generator().manual_seed(1)).numpy()
    runtime = resolve_runtime("cpu", "off", 1)
    tta = WindowSpec(model.patch_size, 0.5, 1, mirror_sets(None, 3, tta=True))
    cpu, classes = torch.device("cpu"), model.num_classes
    with runtime_scope(runtime):
        plain = predict_probabilities(model.networks, image, tta, runtime, cpu, classes)
        flipped = predict_probabilities(model.networks, np.ascontiguousarray(image[:, ::-1, :, ::-1]), tta, runtime, cpu, classes)
        no_tta = predict_probabilities(model.networks, image, WindowSpec(model.patch_size, 0.5, 1), runtime, cpu, classes)
    torch.testing.assert_close(torch.flip(flipped, (1, 3)), plain, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(no_tta, plain, atol=1e-4)

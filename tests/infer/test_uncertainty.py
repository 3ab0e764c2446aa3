"""`medseg infer --save-uncertainty`: entropy (and with TTA/folds mutual information) on the input grid,
the sidecar summary, and masks that do not change when the maps are asked for."""

from __future__ import annotations

import json
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.infer import InferConfig, Segmenter, infer, load_model
from medseg.infer.uncertainty import boundary_band
from medseg.io import Volume, read_volume, write_volume
from medseg.metrics.evaluate import pair_cases
from tests.infer.conftest import two_fold_ensemble


def _test_image(trained, index: int = 4) -> Volume:
    return read_volume(trained["dataset"] / "imagesTs" / f"case_{index:03d}.nii.gz")


def _anisotropic_lps(trained) -> Volume:
    """0.9 x 0.7 x 5 mm, stored LPS: neither the model's grid (2 x 2 x 3 mm) nor RAS order."""
    image = _test_image(trained).reoriented("RAS")
    spacing = np.array([0.9, 0.7, 5.0])
    shape = np.floor(np.array(image.shape) * image.spacing / spacing).astype(int)
    index = [np.minimum((np.arange(n) * spacing[a] / image.spacing[a]).astype(int), image.shape[a] - 1) for a, n in enumerate(shape)]
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = image.affine[:3, 3]
    return Volume(image.array[np.ix_(*index)], affine, meta={"modality": "CT"}).reoriented("LPS")


@pytest.fixture(scope="module")
def uncertain(trained, segmenter) -> Segmenter:
    """The session's model with the maps switched on (no TTA: one member)."""
    return Segmenter(segmenter.model, InferConfig(threads=1, save_uncertainty=True))


@pytest.fixture(scope="module")
def uncertain_tta(segmenter) -> Segmenter:
    return Segmenter(segmenter.model, InferConfig(threads=1, save_uncertainty=True, tta=True, tta_axes=[0, 1]))


def test_entropy_file_lies_on_the_anisotropic_lps_input_grid(trained, uncertain, tmp_path):
    source = write_volume(_anisotropic_lps(trained), tmp_path / "aniso.nii.gz")
    report = infer(uncertain.model, source, tmp_path / "out", uncertain.config, segmenter=uncertain)
    out = tmp_path / "out"
    assert sorted(p.name for p in report.outputs["aniso"]) == ["aniso.json", "aniso.nii.gz", "aniso_entropy.nii.gz"]
    written, mask, given = (nib.load(path) for path in (out / "aniso_entropy.nii.gz", out / "aniso.nii.gz", source))
    assert written.shape == mask.shape == given.shape and written.get_data_dtype() == np.float32
    np.testing.assert_allclose(written.affine, given.affine, atol=1e-5)
    assert int(written.header["sform_code"]) == int(given.header["sform_code"])
    entropy = np.asarray(written.dataobj)
    assert entropy.min() >= 0.0 and entropy.max() <= 1.0 and entropy.max() > 0.05
    labels = np.asarray(mask.dataobj)
    assert (labels > 0).sum() > 100
    band = boundary_band(labels > 0)  # where the mask changes, the model hesitates: world-aligned maps agree on that
    assert entropy[band].mean() > 1.5 * entropy[~band].mean()
    sidecar = json.loads((out / "aniso.json").read_text())
    assert sidecar["outputs"]["entropy"] == "aniso_entropy.nii.gz" and sidecar["outputs"]["mutual_information"] is None
    pairs, _ = pair_cases(out, out)  # evaluate/report see one case, not the entropy map as a second one
    assert [case for case, _, _ in pairs] == ["aniso"]


@pytest.mark.parametrize("orientation", ["LPS", "PSR"])
def test_entropy_agrees_in_world_space_for_any_storage_order(trained, uncertain, orientation):
    image = _test_image(trained)
    reference = uncertain.predict(image)
    stored = image.reoriented(orientation)
    other = uncertain.predict(stored)
    assert other.uncertainty.entropy.shape == stored.shape
    back = Volume(other.uncertainty.entropy, stored.affine).reoriented(image.orientation)
    np.testing.assert_allclose(back.array, reference.uncertainty.entropy, atol=1e-6)


class _Threshold(torch.nn.Module):
    """A certain 'network': logits +-16 at the two intensities of the image, linear in between, so the softmax is
    0/1 (to 1e-7) except where the preprocessed image crosses between them (the edge of a bright ball); class 2 never wins."""

    def __init__(self, low: float, high: float):
        super().__init__()
        self.threshold, self.slope = (low + high) / 2, 32.0 / (high - low)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        margin = self.slope * (x[:, :1] - self.threshold)
        return torch.cat([-margin, margin, torch.full_like(margin, -80.0)], dim=1)


def test_certain_model_entropy_is_zero_except_at_the_structure_edge_in_world_space(segmenter):
    """An off-centre ball in an anisotropic LPS image, a network certain everywhere but at the ball's edge:
    the entropy map must be ~0 wherever the world position is more than 4 mm from the ball's surface."""
    spacing, shape = np.array([0.9, 0.7, 5.0]), (110, 140, 16)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-40.0, -50.0, -30.0)
    centre_mm, radius_mm = np.array([-2.0, -10.0, 0.0]), 22.0
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1) @ affine[:3, :3].T + affine[:3, 3]
    distance = np.linalg.norm(grid - centre_mm, axis=-1) - radius_mm  # signed distance (mm) to the surface, RAS grid
    image = Volume(np.where(distance < 0, 150.0, 0.0).astype(np.float32), affine, meta={"modality": "CT"})
    stored = image.reoriented("LPS")
    distance_stored = Volume(distance, affine).reoriented("LPS").array
    values = torch.as_tensor(segmenter.prepare(stored).image)  # a CUDA tensor when inference runs there
    model = replace(segmenter.model, networks=[_Threshold(float(values.min()), float(values.max()))])
    prediction = Segmenter(model, InferConfig(threads=1, compile="off", save_uncertainty=True)).predict(stored)
    entropy = prediction.uncertainty.entropy
    assert entropy.shape == stored.shape and entropy.dtype == np.float32
    inside = prediction.labels == 1
    assert 2 * (inside & (distance_stored < 0)).sum() / (inside.sum() + (distance_stored < 0).sum()) > 0.9
    far = np.abs(distance_stored) > 4.0
    assert far.mean() > 0.5 and entropy[far].max() < 1e-6  # certain: zero
    hesitant = entropy > 0.01
    assert hesitant.sum() > 50 and 0.2 < entropy.max() <= 1.0
    assert np.abs(distance_stored[hesitant]).max() < 4.0  # only where the ball's edge is in world space (a flip moves it >= 15 mm)


def test_masks_are_unchanged_and_mutual_information_needs_several_members(trained, segmenter, uncertain, uncertain_tta):
    image = _test_image(trained)
    plain, one = segmenter.predict(image), uncertain.predict(image)
    np.testing.assert_array_equal(plain.labels, one.labels)
    assert plain.uncertainty is None and one.uncertainty.mutual_information is None and one.uncertainty.members == 1
    tta_plain = Segmenter(segmenter.model, InferConfig(threads=1, tta=True, tta_axes=[0, 1])).predict(image)
    tta = uncertain_tta.predict(image)
    np.testing.assert_array_equal(tta_plain.labels, tta.labels)
    mutual, entropy = tta.uncertainty.mutual_information, tta.uncertainty.entropy
    assert tta.uncertainty.members == 4 and mutual.shape == image.shape and mutual.dtype == np.float32
    assert mutual.min() >= 0.0 and mutual.max() > 0.0 and np.all(mutual <= entropy + 1e-6)


def test_sidecar_summary(trained, uncertain_tta, tmp_path):
    source = trained["dataset"] / "imagesTs" / "case_005.nii.gz"
    infer(uncertain_tta.model, source, tmp_path / "mask.nii.gz", uncertain_tta.config, segmenter=uncertain_tta)
    assert (tmp_path / "mask_entropy.nii.gz").is_file() and (tmp_path / "mask_mutual_information.nii.gz").is_file()
    sidecar = json.loads((tmp_path / "mask.json").read_text())
    summary = sidecar["uncertainty"]
    assert summary["members"] == 4 and summary["classes"] == 3 and "ln(K)" in summary["entropy"] and summary["mutual_information"]
    assert set(summary["volume"]) == {"entropy_mean", "mutual_information_mean"}
    assert set(summary["labels"]) == {"liver", "tumor"}
    liver = summary["labels"]["liver"]
    assert set(liver) == {"voxels", "boundary_voxels", "entropy_inside", "entropy_boundary", "mutual_information_inside",
                          "mutual_information_boundary"}
    assert liver["voxels"] == sidecar["labels"]["liver"]["voxels"] > 0 and liver["boundary_voxels"] > 0
    assert liver["entropy_boundary"] > liver["entropy_inside"] >= 0 and liver["entropy_boundary"] > summary["volume"]["entropy_mean"]
    entropy = read_volume(tmp_path / "mask_entropy.nii.gz").array
    assert summary["volume"]["entropy_mean"] == pytest.approx(float(entropy.mean()), abs=1e-5)
    assert sidecar["outputs"]["mutual_information"] == "mask_mutual_information.nii.gz"


def test_fold_ensemble_has_mutual_information(trained, tmp_path):
    folds = two_fold_ensemble(trained["run"], tmp_path / "folds")
    ensemble = Segmenter(load_model(folds), InferConfig(threads=1, save_uncertainty=True))
    prediction = ensemble.predict(_test_image(trained))
    maps = prediction.uncertainty
    assert maps.members == 2 and maps.mutual_information is not None
    assert maps.mutual_information.min() >= 0 and maps.mutual_information.max() > 1e-3
    assert np.all(maps.mutual_information <= maps.entropy + 1e-6)
    assert "mutual_information_inside" in ensemble.sidecar(prediction)["uncertainty"]["labels"]["liver"]


def test_cli_infer_then_evaluate_auroc(trained, tmp_path, capsys):
    from medseg.cli import evaluate_cmd, infer_cmd, main

    for module, name in ((infer_cmd, "infer"), (evaluate_cmd, "evaluate")):
        if not any(getattr(command.callback, "__name__", "") == name for command in main.app.registered_commands):
            module.register(main.app)
    labels = trained["dataset"] / "labelsTs"
    if not labels.is_dir():
        pytest.skip("the synthetic dataset has no test labels")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as done:
        main.main(["infer", str(trained["run"]), str(trained["dataset"] / "imagesTs"), "-o", str(out), "--save-uncertainty",
                   "--set", "infer.threads=1"])
    assert done.value.code in (0, None)
    assert sorted(p.name for p in out.glob("*_entropy.nii.gz")) == ["case_004_entropy.nii.gz", "case_005_entropy.nii.gz"]
    with pytest.raises(SystemExit) as done:
        main.main(["evaluate", "-p", str(out), "-g", str(labels), "-o", str(tmp_path / "eval"), "--uncertainty", str(out),
                   "--set", "evaluate.bootstrap_samples=0"])
    assert done.value.code in (0, None)
    scores = json.loads((tmp_path / "eval" / "uncertainty.json").read_text())
    assert set(scores["entropy"]["all_voxels"]["per_case"]) == {"case_004", "case_005"}
    assert 0.5 < scores["entropy"]["near_structures"]["pooled_auroc"] <= 1.0  # entropy ranks the errors better than chance
    assert "entropy AUROC for wrong voxels" in capsys.readouterr().out.replace("\n", " ")


@pytest.mark.parametrize("patch, mirrors", [((16, 16, 8), 3), ((16, 16), 2)])
def test_member_entropy_leaves_the_probabilities_bitwise_unchanged(patch, mirrors):
    """3D and 2D (slice-wise) networks: the extra stitched output changes nothing in the probabilities, and
    the expected member entropy never exceeds the entropy of the mean (concavity)."""
    from medseg.infer.predictor import WindowSpec, mirror_sets, predict_outputs, predict_probabilities
    from medseg.models.config import ModelConfig
    from medseg.models.registry import build_model
    from medseg.runtime import resolve_runtime, runtime_scope

    torch.manual_seed(0)
    network = build_model(ModelConfig(base_features=4, max_features=16), 1, 3, {"patch_size": list(patch)}).eval()
    image = np.random.default_rng(0).normal(size=(1, 20, 24, 10)).astype(np.float32)
    spec = WindowSpec(patch, 0.5, 2, mirror_sets(None, len(patch), True))
    runtime, cpu = resolve_runtime("cpu", "off", 1), torch.device("cpu")
    with runtime_scope(runtime):
        plain = predict_probabilities([network], image, spec, runtime, cpu, 3)
        outputs = predict_outputs([network], image, spec, runtime, cpu, 3, member_entropy=True)
        probabilities, expected = outputs.probabilities, outputs.expected_entropy
    assert torch.equal(plain, probabilities) and expected.shape == image.shape[1:]
    assert len(spec.mirrors) == 2**mirrors
    assert float((torch.special.entr(probabilities).sum(0) - expected).min()) >= -1e-6

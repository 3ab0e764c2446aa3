"""Lesions as instances: the instance map and lesions JSON on a non-RAS anisotropic input grid, both confidence sources,
and `medseg evaluate` picking them up."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from medseg.errors import ConfigError
from medseg.infer import InferConfig, Segmenter, infer
from medseg.infer.instances import InstanceSetup, LesionClass, find_instances, lesion_classes, world_box
from medseg.io import read_volume, write_volume

# The tiny models find liver in every case but not yet tumour: the liver's components stand in for lesions here (the
# geometry and the bookkeeping are what is tested; the head was trained on the tumour, which does not matter for that).
FAST = InferConfig(threads=1, lesion_labels=["liver"])


@pytest.fixture(scope="module")
def instance_run(trained):
    """lesion_instances trained 2 x 8 steps on the inference tests' synthetic cache (a few seconds)."""
    from medseg.config.loader import load_config
    from medseg.train.trainer import Trainer

    from tests.infer.conftest import TRAIN_SETTINGS

    settings = [s for s in TRAIN_SETTINGS if not s.startswith(("train.epochs", "train.iterations_per_epoch", "model."))]
    config = load_config(None, settings + ["train.epochs=2", "train.iterations_per_epoch=8", "model.name=lesion_instances",
                                           "model.base_features=4", "model.max_features=16"])
    threads = torch.get_num_threads()
    try:
        Trainer(config, trained["root"] / "cache", trained["root"] / "instance_run", progress=False).fit()
    finally:
        torch.set_num_threads(threads)
    return trained["root"] / "instance_run"


@pytest.fixture(scope="module")
def oblique_case(trained, tmp_path_factory):
    """Test case 4 (LPI, 1.76 x 1.76 x 4 mm) stored with permuted axes: PSR."""
    image = read_volume(trained["dataset"] / "imagesTs" / "case_004.nii.gz").reoriented("PSR")
    assert image.orientation == "PSR" and len(set(np.round(image.spacing, 3))) > 1
    return write_volume(image, tmp_path_factory.mktemp("oblique") / "case.nii.gz")


def _check_instances(out, image_path) -> dict:
    source = nib.load(str(image_path))
    stored = nib.load(str(out / "case_instances.nii.gz"))
    assert stored.get_data_dtype() == np.uint16 and stored.shape == source.shape
    np.testing.assert_allclose(stored.affine, source.affine, atol=1e-5)
    instances = np.asarray(stored.dataobj)
    mask = np.asarray(nib.load(str(out / "case.nii.gz")).dataobj)
    document = json.loads((out / "case_lesions.json").read_text())
    assert document["instance_map"] == "case_instances.nii.gz" and document["lesion_labels"] == {"liver": {"label_index": 1, "label_values": [1]}}
    lesions = document["lesions"]
    assert lesions, "the tiny model predicts some liver, so the checks below mean something"
    assert [lesion["id"] for lesion in lesions] == list(range(1, len(lesions) + 1))
    assert all(0 <= lesion["confidence"] <= 1 for lesion in lesions)
    assert [lesion["confidence"] for lesion in lesions] == sorted((lesion["confidence"] for lesion in lesions), reverse=True)
    np.testing.assert_array_equal(instances > 0, mask == 1)  # every voxel of the lesion label in exactly one instance
    _, components = ndimage.label(mask == 1, structure=np.ones((3, 3, 3)))
    assert components == len(lesions)  # instances are the label's 26-connected components
    affine = stored.affine
    for lesion in lesions[:25]:
        voxels = np.argwhere(instances == lesion["id"])
        assert len(voxels) == lesion["voxels"]
        assert lesion["bbox_voxels"] == {"min": voxels.min(0).tolist(), "max": voxels.max(0).tolist()}
        world = nib.affines.apply_affine(affine, voxels)
        low, high = np.array(lesion["bbox_mm"]["min"]), np.array(lesion["bbox_mm"]["max"])
        half = np.abs(affine[:3, :3]).sum(axis=1) / 2  # voxel centres lie at least half a voxel inside the box
        np.testing.assert_allclose(world.min(0) - half, low, atol=2e-3)
        np.testing.assert_allclose(world.max(0) + half, high, atol=2e-3)
        np.testing.assert_allclose(world.mean(0), lesion["centroid_mm"], atol=2e-3)
        assert lesion["volume_ml"] == pytest.approx(len(voxels) * abs(np.linalg.det(affine[:3, :3])) / 1000, abs=1e-6)
    return document


def test_objectness_instances_on_a_non_ras_anisotropic_grid(instance_run, oblique_case, tmp_path):
    infer(instance_run, oblique_case, tmp_path, FAST)  # instances: auto, on for a model with the head
    document = _check_instances(tmp_path, oblique_case)
    assert document["confidence"]["source"] == "objectness"
    sidecar = json.loads((tmp_path / "case.json").read_text())
    assert sidecar["outputs"]["instances"] == "case_instances.nii.gz" and sidecar["instances"]["lesions"] == len(document["lesions"])


def test_probability_fallback_for_a_model_without_the_head(trained, oblique_case, tmp_path):
    config = FAST.model_copy(update={"instances": True, "save_probabilities": True})
    infer(trained["run"], oblique_case, tmp_path, config)
    document = _check_instances(tmp_path, oblique_case)
    assert document["confidence"]["source"] == "probability"
    with np.load(tmp_path / "case_probabilities.npz") as saved:
        liver = saved["probabilities"][list(saved["labels"]).index("liver")].astype(np.float64)
    instances = np.asarray(nib.load(str(tmp_path / "case_instances.nii.gz")).dataobj)
    for lesion in document["lesions"][:10]:  # the mean probability of the label inside (float16 on disk)
        assert lesion["confidence"] == pytest.approx(liver[instances == lesion["id"]].mean(), abs=2e-3)
    assert Segmenter(trained["run"], FAST).instances is None  # default: no instance outputs for a plain model
    with pytest.raises(ConfigError, match="lesion-centre head"):
        Segmenter(trained["run"], FAST.model_copy(update={"instance_confidence": "objectness"}))


def test_evaluate_finds_the_instances_end_to_end(trained, instance_run, tmp_path):
    from medseg.metrics import evaluate

    infer(instance_run, trained["dataset"] / "imagesTs", tmp_path / "pred", FAST)
    result = evaluate(tmp_path / "pred", trained["dataset"] / "labelsTs", labels=trained["dataset"] / "dataset.json", lesion_labels=["liver"],
                      out_dir=tmp_path / "eval", progress=False)
    detection = result.summary["lesion_detection"]["labels"]["liver"]
    assert detection["cases"] == 2 and detection["reference_lesions"] > 0
    assert 0 <= detection["average_precision"] <= 1 and set(detection["sensitivity_at_fp_per_case"]) == {"0.125", "0.25", "0.5", "1", "2", "4", "8"}
    assert (tmp_path / "eval" / "froc.png").stat().st_size > 1000


def test_find_instances_orders_by_confidence_and_scores_by_source():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[1:3, 1:3, 1:3] = 2  # small, low score
    labels[5:9, 5:9, 5:9] = 2  # large, high peak
    labels[0, 9, 0] = 3  # another lesion label
    score = np.zeros(labels.shape, np.float32)
    score[1:3, 1:3, 1:3] = 0.4
    score[5:9, 5:9, 5:9] = 0.1
    score[6, 6, 6] = 0.9
    score[0, 9, 0] = 0.6
    classes = {2: LesionClass("tumor", (2,), 2), 3: LesionClass("cyst", (3,), 3)}
    peak, ordered = find_instances(labels, InstanceSetup(classes, "objectness"), {2: score, 3: score})
    assert [(label, round(conf, 3)) for _, label, conf in ordered] == [(2, 0.9), (3, 0.6), (2, 0.4)]
    assert peak[6, 6, 6] == 1 and peak[0, 9, 0] == 2 and peak[1, 1, 1] == 3
    _, ordered = find_instances(labels, InstanceSetup({2: classes[2]}, "probability"), {2: score})
    assert [round(conf, 4) for _, _, conf in ordered] == [0.4, round((63 * 0.1 + 0.9) / 64, 4)]  # mean inside


def test_world_box_of_an_oblique_permuted_grid():
    affine = np.array([[0.0, 0.0, -2.0, 10.0], [0.7, 0.7, 0.0, -5.0], [-0.7, 0.7, 0.0, 3.0], [0, 0, 0, 1]])
    box = (slice(2, 5), slice(0, 1), slice(4, 6))
    corners = np.array([[i, j, k] for i in (1.5, 4.5) for j in (-0.5, 0.5) for k in (3.5, 5.5)])
    world = nib.affines.apply_affine(affine, corners)
    low, high = world_box(box, affine)
    np.testing.assert_allclose(low, world.min(0), atol=1e-3)
    np.testing.assert_allclose(high, world.max(0), atol=1e-3)


def test_region_models_take_the_outermost_lesion_region_as_the_lesion():
    """BraTS: whole tumour (painted 2) holds the core (1) and enhancing tumour (4); a lesion is a whole-tumour component."""
    regions = {"whole tumor": (1, 2, 3, 4), "tumor core": (1, 3, 4), "enhancing tumor": (4,)}
    names = {0: "background", 2: "oedema", 1: "necrosis", 4: "enhancing tumor"}
    classes = lesion_classes(InferConfig(), [4], names, regions, [2, 1, 4])
    assert classes == {2: LesionClass("whole tumor", (1, 2, 4), 0)}
    chosen = lesion_classes(InferConfig(lesion_labels=["enhancing tumor"]), [4], names, regions, [2, 1, 4])
    assert chosen == {4: LesionClass("enhancing tumor", (4,), 2)}
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[1:6, 1:6, 1:6] = 2
    labels[2:4, 2:4, 2:4] = 1
    labels[3, 3, 3] = 4
    _, ordered = find_instances(labels, InstanceSetup(classes, "probability"), {2: np.full(labels.shape, 0.5, np.float32)})
    assert [(component.voxels, label) for component, label, _ in ordered] == [(125, 2)]  # one lesion, the whole tumour

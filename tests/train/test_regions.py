"""Region-based training and inference (nnU-Net v2 regions) and the ignore label, end to end on a tiny dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.io.readers import read_volume, write_volume
from tests.train.conftest import tiny_config

REGION_LABELS = {"background": 0, "liver and tumor": [1, 2], "tumor": [2]}


def nnunet_copy(source: Path, dest: Path, labels: dict, order: list[int] | None = None, ignore_slab: bool = False) -> Path:
    """The synthetic MSD dataset as an nnU-Net v2 dataset (``_0000`` channel files) with ``labels``;
    ``ignore_slab`` marks the first two slices of every label map as unannotated (value 3)."""
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (dest / folder).mkdir(parents=True, exist_ok=True)
    for path in sorted((source / "imagesTr").glob("*.nii.gz")):
        case = path.name.removesuffix(".nii.gz")
        shutil.copy(path, dest / "imagesTr" / f"{case}_0000.nii.gz")
        label = read_volume(source / "labelsTr" / path.name, role="label")
        if ignore_slab:
            array = np.array(label.array)
            array[:, :, :2] = 3
            label = label.with_array(array)
        write_volume(label, dest / "labelsTr" / path.name)
    for path in sorted((source / "imagesTs").glob("*.nii.gz")):
        shutil.copy(path, dest / "imagesTs" / f"{path.name.removesuffix('.nii.gz')}_0000.nii.gz")
    data = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": len(list((dest / "labelsTr").iterdir())), "file_ending": ".nii.gz"}
    if order is not None:
        data["regions_class_order"] = order
    (dest / "dataset.json").write_text(json.dumps(data))
    return dest


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    from medseg.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("regions") / "msd", cases=3, seed=5, test_cases=1, fov_mm=(100, 100, 60))


def _cache(dataset: Path, work: Path):
    from medseg.train.api import prepare_cache

    return prepare_cache(dataset, tiny_config(f"work_dir={work}"), progress=False)


def _train(cache: Path, run: Path, *extra: str):
    from medseg.train.trainer import Trainer

    threads = torch.get_num_threads()
    try:
        trainer = Trainer(tiny_config("train.fold=all", "train.epochs=1", "train.iterations_per_epoch=3", "train.val_patch_batches=1", *extra),
                          cache, run, progress=False)
        return trainer, trainer.fit()
    finally:
        torch.set_num_threads(threads)


def test_region_dataset_trains_sigmoid_outputs_and_infers_a_label_map(synthetic, tmp_path):
    from medseg.infer import InferConfig, Segmenter

    dataset = nnunet_copy(synthetic, tmp_path / "nn", REGION_LABELS, order=[1, 2])
    cache = _cache(dataset, tmp_path / "work")
    trainer, result = _train(cache, tmp_path / "run")
    assert trainer.plan.has_regions and trainer.model_spec.out_channels == 2  # one output per region, no background
    assert type(trainer.step.loss.loss).__name__ == "RegionDiceBCELoss"
    assert set(result.last_validation["dice"]) == {"liver and tumor", "tumor"}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["scored"] == "regions" and set(summary["final_validation"]) == {"liver and tumor", "tumor"}
    assert "patch_dice_tumor" in trainer.counters.history[-1]

    segmenter = Segmenter(tmp_path / "run", InferConfig(threads=1, save_probabilities=True))
    assert segmenter.spec.activation == "sigmoid"
    assert segmenter.model.labels == {0: "background", 1: "label_1", 2: "tumor"}  # what the regions paint
    image = read_volume(next((dataset / "imagesTs").iterdir()))
    prediction = segmenter.predict(image)
    assert prediction.labels.shape == image.shape
    assert set(np.unique(prediction.labels)) <= {0, 1, 2}
    assert prediction.probabilities.shape == (2, *image.shape)  # per-region sigmoid on the input grid
    assert segmenter.model.probability_names == ["liver and tumor", "tumor"]
    # the label map is the saved region probabilities painted in order (outer region 1, then tumor 2 over it)
    probabilities = prediction.probabilities.astype(np.float32)
    expected = np.zeros(image.shape, np.uint8)
    expected[probabilities[0] > 0.5] = 1
    expected[probabilities[1] > 0.5] = 2
    clear = np.all(np.abs(probabilities - 0.5) > 0.01, axis=0)  # away from the threshold (float16 rounding)
    assert np.array_equal(prediction.labels[clear], expected[clear])
    assert (prediction.labels[clear] == 1).sum() > 100
    # region rules: the largest component of the outer region, its nested region repainted within it
    cleaned = Segmenter(tmp_path / "run", InferConfig(threads=1, postprocess={"liver and tumor": {"largest_component": True}}))
    after = cleaned.predict(image)
    from scipy import ndimage
    assert ndimage.label(after.labels > 0, np.ones((3, 3, 3)))[1] <= 1
    removed = after.removed["liver and tumor"]
    assert removed == int((prediction.labels > 0).sum() - (after.labels > 0).sum())
    assert "liver and tumor" in cleaned.sidecar(after)["settings"]["postprocess"]


def test_region_loss_matches_hand_values_and_respects_ignore():
    from medseg.losses.regions import RegionDiceBCELoss

    target = torch.tensor([0, 1, 2, 3]).view(1, 1, 4, 1, 1)
    logits = torch.tensor([[-20.0, 20.0, 20.0, 0.0], [-20.0, -20.0, 20.0, 7.0]]).view(1, 2, 4, 1, 1)
    loss = RegionDiceBCELoss([(1, 2), (2,)], ignore_label=3, smooth_nr=0, smooth_dr=0)
    # the ignored voxel (3) is left out: both regions perfect -> Dice 1, BCE ~ 0
    assert float(loss(logits, target)) == pytest.approx(0.0, abs=1e-6)
    without = RegionDiceBCELoss([(1, 2), (2,)], smooth_nr=0, smooth_dr=0)
    assert float(without(logits, torch.tensor([0, 1, 2, 0]).view(1, 1, 4, 1, 1))) > 0.1  # the same voxel as background now costs


def test_region_sampling_centres_each_region():
    from medseg.data.sampling import CaseArrays, choose_foreground_voxel

    locations = {1: np.array([[i, 0, 0] for i in range(90)]), 2: np.array([[100 + i, 0, 0] for i in range(10)])}
    case = CaseArrays("c", np.zeros((1, 2, 2, 2), np.float32), np.zeros((2, 2, 2), np.uint8), locations)
    rng = np.random.default_rng(0)
    picks = [choose_foreground_voxel(case, rng, regions=[(1, 2), (2,)])[0] for _ in range(2000)]
    share_small = np.mean(np.array(picks) >= 100)
    # region {2} half the time, plus 10% of the pooled {1, 2} draws: 0.55
    assert share_small == pytest.approx(0.55, abs=0.04)


def test_ignore_label_end_to_end(synthetic, tmp_path):
    from medseg.data.cache import load_case_arrays
    from medseg.infer import InferConfig, Segmenter

    labels = {"background": 0, "liver": 1, "tumor": 2, "ignore": 3}
    dataset = nnunet_copy(synthetic, tmp_path / "nn", labels, ignore_slab=True)
    cache = _cache(dataset, tmp_path / "work")
    trainer, result = _train(cache, tmp_path / "run")
    assert trainer.model_spec.out_channels == 3  # background, liver, tumor: never a class for 'ignore'
    assert trainer.step.loss.loss.ignore_label == 3  # the plan's ignore label reaches the loss
    case = load_case_arrays(cache, trainer.train_ids[0])
    assert 3 in np.unique(case.seg)  # kept through resampling (nearest)
    assert 3 not in case.class_locations  # never sampled as foreground
    assert set(result.last_validation["dice"]) == {1, 2}
    segmenter = Segmenter(tmp_path / "run", InferConfig(threads=1))
    prediction = segmenter.predict(read_volume(next((dataset / "imagesTs").iterdir())))
    assert 3 not in np.unique(prediction.labels)


def test_regions_to_labels_paints_in_order_later_overwrites():
    from medseg.data.regions import regions_to_labels

    probabilities = torch.tensor([[0.9, 0.9, 0.9, 0.2], [0.1, 0.8, 0.8, 0.9], [0.0, 0.0, 0.7, 0.0]])  # WT, TC, ET over 4 voxels
    assert regions_to_labels(probabilities, [2, 1, 4]).tolist() == [2, 1, 4, 1]  # a core voxel outside WT is still core
    batched = regions_to_labels(probabilities.T[None], [2, 1, 4], dim=2)  # (1, 4 voxels, 3 regions)
    assert batched.tolist() == [[2, 1, 4, 1]]
    with pytest.raises(ValueError, match="3 region outputs"):
        regions_to_labels(probabilities, [1, 2])


def test_changed_regions_replan(synthetic, tmp_path):
    from medseg.data.cache import read_cache

    dataset = nnunet_copy(synthetic, tmp_path / "nn", {"background": 0, "liver": 1, "tumor": 2})
    assert not read_cache(_cache(dataset, tmp_path / "work"))[0].has_regions
    nnunet_copy(synthetic, tmp_path / "nn", REGION_LABELS, order=[1, 2])
    plan = read_cache(_cache(dataset, tmp_path / "work"))[0]
    assert plan.has_regions and plan.regions_class_order == [1, 2]


def test_model_of_an_import_infers_a_raw_case_folder_as_its_imported_channels(tmp_path):
    """The plan keeps the import's file patterns (and mask), so `medseg infer RUN CASE_FOLDER` needs no conversion."""
    from medseg.data.importer import import_dataset, resolve_spec
    from medseg.infer import InferConfig, Segmenter, infer
    from tests.data._builders import brats_like

    src = brats_like(tmp_path / "src", cases=2, shape=(40, 36, 20))
    import_dataset(src, tmp_path / "dataset", resolve_spec(preset="brats2015"))
    cache = _cache(tmp_path / "dataset", tmp_path / "work")
    trainer, _ = _train(cache, tmp_path / "run", "plan.target_spacing=[1.5,1.5,1.5]", "train.patch_size=[16,16,16]")
    assert trainer.plan.case_folder.channels == ["Flair*", "T1c*"] and trainer.plan.case_folder.mask == "brainmask*"
    segmenter = Segmenter(tmp_path / "run", InferConfig(threads=1))
    infer(segmenter.model, src / "pat00", tmp_path / "raw", segmenter=segmenter)
    infer(segmenter.model, tmp_path / "dataset" / "imagesTr" / "pat00_0000.nii.gz", tmp_path / "imported", segmenter=segmenter)
    raw, imported = (read_volume(tmp_path / folder / "pat00.nii.gz", role="label") for folder in ("raw", "imported"))
    assert np.array_equal(raw.array, imported.array) and np.allclose(raw.affine, imported.affine)
    flair = read_volume(src / "pat00" / "Flair_subtrMeanDivStd.nii.gz")
    assert raw.shape == flair.shape and np.allclose(raw.affine, flair.affine)  # the input's exact grid

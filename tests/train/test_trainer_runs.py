"""Trainer behaviour added for real machines: no global state left behind, checkpoints by time,
`--fold all`, small datasets, patch Dice, and 2D networks sliced along the planned axis."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medseg.errors import ConfigError
from medseg.train import trainer as trainer_module
from medseg.train.api import parse_folds
from medseg.train.trainer import Trainer
from tests.train.conftest import tiny_config


def test_training_leaves_no_global_torch_state(tiny_cache, tmp_path):
    torch.set_num_threads(2)
    torch.manual_seed(99)
    before_rng, before_threads = torch.get_rng_state(), torch.get_num_threads()
    Trainer(tiny_config("train.epochs=1", "train.iterations_per_epoch=2"), tiny_cache, tmp_path / "run", progress=False).fit()
    assert torch.get_num_threads() == before_threads
    assert torch.equal(torch.get_rng_state(), before_rng)


def test_resume_checkpoint_is_written_by_time_not_every_epoch(tiny_cache, tmp_path, monkeypatch):
    saved = []
    original = trainer_module.save_checkpoint
    monkeypatch.setattr(trainer_module, "save_checkpoint", lambda path, payload: saved.append(path.name) or original(path, payload))
    Trainer(tiny_config("train.epochs=4", "train.iterations_per_epoch=2", "train.val_every=100"), tiny_cache, tmp_path / "a", progress=False).fit()
    assert saved.count("checkpoint_last.pt") == 1, "5 minutes did not pass: only the final resume checkpoint"
    saved.clear()
    Trainer(tiny_config("train.epochs=4", "train.iterations_per_epoch=2", "train.val_every=100", "train.checkpoint_every=2"),
            tiny_cache, tmp_path / "b", progress=False).fit()
    assert saved.count("checkpoint_last.pt") == 2


def test_fold_all_trains_on_every_case_and_says_so(tiny_cache, tmp_path):
    trainer = Trainer(tiny_config("train.fold=all", "train.epochs=1", "train.iterations_per_epoch=2"), tiny_cache, tmp_path / "all", progress=False)
    assert trainer.train_ids == trainer.val_ids and len(trainer.train_ids) == 4
    result = trainer.fit()
    assert result.last_validation["kind"] == "training cases (fold all)"
    summary = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert summary["fold"] == "all" and summary["validation"] == "training cases (fold all)" and summary["validation_cases"] == 4
    # the names the command line prints next to each score are the summary's (label names, not their indices)
    assert [result.names[key] for key in result.last_validation["dice"]] == list(summary["final_validation"])
    assert all(isinstance(name, str) and not name.isdigit() for name in result.names.values())
    assert trainer.counters.history[-1]["val_kind"] == "training cases (fold all)"
    assert parse_folds("all") == ["all"] and parse_folds("0,1, 2") == [0, 1, 2] and parse_folds("3") == [3]
    with pytest.raises(ConfigError, match="each in turn"):
        parse_folds("zero")


def test_fewer_cases_than_folds_suggests_all(tiny_cache, tmp_path):
    with pytest.raises(ConfigError, match="--fold all") as caught:
        Trainer(tiny_config("train.num_folds=5"), tiny_cache, tmp_path / "x", progress=False)
    assert "4 case(s) cannot make 5 folds" in str(caught.value) and "train.num_folds=4" in str(caught.value)


def test_held_out_validation_names_its_fold(tiny_cache, tmp_path):
    trainer = Trainer(tiny_config("train.fold=1", "train.epochs=1", "train.iterations_per_epoch=1"), tiny_cache, tmp_path / "f1", progress=False)
    assert trainer.val_kind == "held-out fold 1" and not set(trainer.train_ids) & set(trainer.val_ids)


def test_patch_dice_is_logged_every_epoch(tiny_cache, tmp_path):
    trainer = Trainer(tiny_config("train.epochs=2", "train.iterations_per_epoch=2", "train.val_every=100", "train.val_patch_batches=2"),
                      tiny_cache, tmp_path / "pd", progress=False)
    trainer.fit()
    rows = trainer.counters.history
    assert all("patch_dice_liver" in row for row in rows)
    assert "val_dice_liver" in rows[-1] and "val_dice_liver" not in rows[0], "full-volume validation only at the end here"


def test_full_volume_validation_is_the_inference_predictor(tiny_cache, tmp_path):
    """Validation labels equal argmax of medseg.infer's blended probabilities for the same network and window."""
    from medseg.data.cache import load_case_arrays
    from medseg.infer.predictor import predict_probabilities
    from medseg.train.validate import predict_case_labels

    trainer = Trainer(tiny_config("train.epochs=1", "train.iterations_per_epoch=2"), tiny_cache, tmp_path / "v", progress=False)
    trainer.fit()
    case = load_case_arrays(tiny_cache, trainer.val_ids[0])
    spec = trainer.window_spec()
    network = trainer.step.network.eval()
    labels = predict_case_labels(network, case.image, spec, trainer.runtime, 3)
    probabilities = predict_probabilities([network], case.image, spec, trainer.runtime, torch.device("cpu"), 3)
    np.testing.assert_array_equal(labels, probabilities.argmax(0).numpy())


def test_2d_configuration_trains_and_infers_across_its_planned_axis(tmp_path):
    """Thick 4 mm slices along the first RAS axis: the plan slices across axis 0, and so do training and inference."""
    from medseg.config.loader import load_config
    from medseg.infer import InferConfig, Segmenter
    from medseg.io import read_volume
    from medseg.train.api import train
    from tests.data._builders import make_msd

    root = make_msd(tmp_path / "ds", cases=4, spacings=[(4.0, 1.0, 1.0)], shape=(10, 40, 36))
    config = load_config(None, ["train.configuration=2d", "train.epochs=1", "train.iterations_per_epoch=3", "train.num_folds=2",
                                "train.threads=1", "train.tensorboard=false", "model.base_features=4", "model.max_features=16",
                                f"work_dir={tmp_path / 'work'}", f"run_dir={tmp_path / 'run'}", "preprocess.workers=1"])
    config.dataset = str(root)
    (result,) = train(config, [0], progress=False)
    from medseg.train.checkpoint import load_checkpoint

    configuration = load_checkpoint(result.run_dir / "checkpoint_last.pt").configuration
    assert configuration.slice_axis == 0 and configuration.plane_axes == [1, 2]
    segmenter = Segmenter(result.run_dir, InferConfig(threads=1))
    assert segmenter.spec.slice_axis == 0
    image = read_volume(root / "imagesTr" / "case_000.nii.gz")
    prediction = segmenter.predict(image)
    assert prediction.labels.shape == image.shape
    assert segmenter.windows(prediction.preprocessed_shape) % prediction.preprocessed_shape[0] == 0, "one 2D pass per slice along axis 0"

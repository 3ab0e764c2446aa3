"""LIDC-like parallel folders of 2- and 3-slice crops: import, patient-grouped training, inference and evaluation
from the command line, every mask written on its input's exact grid."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from tests.data.test_thin_volumes import thin_crops

TINY = ["train.epochs=1", "train.iterations_per_epoch=3", "train.num_folds=2", "train.split_group=^(.*)_R_", "train.val_every=1",
        "train.threads=1", "train.tensorboard=false", "model.base_features=4", "model.max_features=16", "preprocess.workers=1"]


def test_thin_crops_import_train_infer_evaluate(tmp_path, run_cli):
    src = thin_crops(tmp_path / "src")
    assert run_cli("dataset", "import", src, tmp_path / "lidc", "--preset", "lidc").code == 0
    settings = [item for pair in (("--set", value) for value in [*TINY, f"work_dir={tmp_path / 'work'}"]) for item in pair]
    trained = run_cli("train", tmp_path / "lidc", *settings, "-o", tmp_path / "run")
    assert trained.code == 0, trained.err
    splits = json.loads(next((tmp_path / "work").rglob("splits.json")).read_text())
    assert not {name.split("_R_")[0] for name in splits[0]["train"]} & {name.split("_R_")[0] for name in splits[0]["val"]}
    inferred = run_cli("infer", tmp_path / "run" / "fold_0", src / "image", "-o", tmp_path / "preds", "--set", "infer.threads=1")
    assert inferred.code == 0, inferred.err
    for image in sorted((src / "image").iterdir()):
        source, mask = nib.load(str(image)), nib.load(str(tmp_path / "preds" / image.name))
        assert mask.shape == source.shape and source.shape[2] in (2, 3)
        assert np.allclose(mask.affine, source.affine, atol=1e-6), image.name
    scored = run_cli("evaluate", "-p", tmp_path / "preds", "-g", tmp_path / "lidc" / "labelsTr", "-l", tmp_path / "lidc" / "dataset.json",
                     "--lesion-labels", "nodule", "-o", tmp_path / "eval")
    assert scored.code == 0, scored.err
    assert "6 case(s)" in " ".join(scored.out.split())

"""fcn, segnet and deeplabv3plus train a few 2D iterations through medseg's public API, then segment a volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.data._builders import make_msd


@pytest.fixture(scope="module")
def tiny_2d(tmp_path_factory) -> tuple[Path, Path]:
    """A 4-case dataset with 4 mm slices along axis 0, and one work folder so the cache is built once."""
    root = tmp_path_factory.mktemp("classic_2d")
    return make_msd(root / "ds", cases=4, spacings=[(4.0, 1.0, 1.0)], shape=(10, 40, 36)), root / "work"


@pytest.mark.parametrize("name", ["fcn", "segnet", "deeplabv3plus"])
def test_trains_in_2d_and_infers(tiny_2d, name, tmp_path):
    from medseg.config.loader import load_config
    from medseg.infer import InferConfig, Segmenter
    from medseg.io import read_volume
    from medseg.train.api import train
    from medseg.train.checkpoint import load_checkpoint

    dataset, work = tiny_2d
    config = load_config(None, [f"model.name={name}", "train.configuration=2d", "train.epochs=1", "train.iterations_per_epoch=2",
                                "train.num_folds=2", "train.threads=1", "train.tensorboard=false", "model.base_features=4",
                                "model.max_features=16", f"work_dir={work}", f"run_dir={tmp_path / 'run'}", "preprocess.workers=1"])
    config.dataset = str(dataset)
    (result,) = train(config, [0], progress=False)
    assert result.iterations_done == 2
    checkpoint = load_checkpoint(result.run_dir / "checkpoint_last.pt")
    assert checkpoint.model_spec.name == name and len(checkpoint.configuration.patch_size) == 2

    segmenter = Segmenter(result.run_dir, InferConfig(threads=1))
    image = read_volume(dataset / "imagesTr" / "case_000.nii.gz")
    prediction = segmenter.predict(image)
    assert prediction.labels.shape == image.shape
    assert set(np.unique(prediction.labels).tolist()) <= {0, 1, 2}

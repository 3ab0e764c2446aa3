"""Every registered architecture trains a few iterations in 2D and in 3D through medseg's public API, then segments a volume:
`medseg train DATA --set model.name=NAME` works for each entry, whatever the configuration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.models import available_models
from tests.data._builders import make_msd


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> tuple[Path, Path]:
    """A 4-case dataset with 4 mm slices along axis 0, and one work folder so the caches are built once."""
    root = tmp_path_factory.mktemp("every_architecture")
    return make_msd(root / "ds", cases=4, spacings=[(4.0, 1.0, 1.0)], shape=(10, 40, 36)), root / "work"


@pytest.mark.parametrize("configuration", ["2d", "3d"])
@pytest.mark.parametrize("name", sorted(available_models()))
def test_trains_and_infers(tiny_dataset, name, configuration, tmp_path):
    from medseg.config.loader import load_config
    from medseg.infer import InferConfig, Segmenter
    from medseg.io import read_volume
    from medseg.train.api import train
    from medseg.train.checkpoint import load_checkpoint

    dataset, work = tiny_dataset
    config = load_config(None, [f"model.name={name}", f"train.configuration={configuration}", "train.epochs=1", "train.iterations_per_epoch=2",
                                "train.num_folds=2", "train.threads=1", "train.tensorboard=false", "model.base_features=4",
                                "model.max_features=16", f"work_dir={work}", f"run_dir={tmp_path / 'run'}", "preprocess.workers=1"])
    config.dataset = str(dataset)
    (result,) = train(config, [0], progress=False)
    assert result.iterations_done == 2
    checkpoint = load_checkpoint(result.run_dir / "checkpoint_last.pt")
    assert checkpoint.model_spec.name == name and len(checkpoint.configuration.patch_size) == (2 if configuration == "2d" else 3)

    segmenter = Segmenter(result.run_dir, InferConfig(threads=1))
    image = read_volume(dataset / "imagesTr" / "case_000.nii.gz")
    prediction = segmenter.predict(image)
    assert prediction.labels.shape == image.shape
    assert set(np.unique(prediction.labels).tolist()) <= {0, 1, 2}

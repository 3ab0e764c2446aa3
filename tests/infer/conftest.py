"""One tiny trained model for every inference test (trained once per session, ~10 s on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TRAIN_SETTINGS = [
    "plan.target_spacing=[2.0,2.0,3.0]",
    "train.patch_size=[32,32,16]",
    "train.batch_size=2",
    "train.epochs=2",
    "train.iterations_per_epoch=50",
    "train.val_every=1",
    "train.val_max_cases=1",
    "train.num_folds=2",
    "train.lr=0.02",
    "train.threads=1",
    "train.tensorboard=false",
    "model.base_features=8",
    "model.max_features=32",
]


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A synthetic liver/tumor dataset (anisotropic, mixed orientations) and a model trained 100 iterations on it."""
    from medseg.data.cache import preprocess_dataset
    from medseg.data.dataset import load_dataset
    from medseg.data.fingerprint import compute_fingerprint
    from medseg.data.plan import make_plan
    from medseg.data.synthetic import make_synthetic_dataset
    from medseg.config.loader import load_config
    from medseg.train.trainer import Trainer

    root = tmp_path_factory.mktemp("infer_model")
    dataset = make_synthetic_dataset(root / "dataset", cases=4, seed=0, test_cases=2, fov_mm=(120.0, 120.0, 80.0),
                                     inplane_spacing_mm=(1.5, 2.0), slice_spacing_mm=(2.0, 4.0))
    description = load_dataset(dataset)
    fingerprint = compute_fingerprint(description, workers=1, progress=False)
    config = load_config(None, TRAIN_SETTINGS)
    plan = make_plan(description, fingerprint, config.plan)
    preprocess_dataset(description, plan, root / "cache", workers=1, progress=False)
    threads = torch.get_num_threads()
    try:
        Trainer(config, root / "cache", root / "run", progress=False).fit()
    finally:
        torch.set_num_threads(threads)  # the trainer sets it process-wide
    return {"dataset": dataset, "run": root / "run", "root": root}


@pytest.fixture(scope="session")
def segmenter(trained):
    from medseg.infer import InferConfig, Segmenter

    return Segmenter(trained["run"], InferConfig(threads=1))


def two_fold_ensemble(run: Path, folds: Path) -> Path:
    """``folds/fold_0`` = the trained run's best checkpoint, ``fold_1`` = the same network with perturbed weights."""
    from medseg.train.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(run / "checkpoint_best.pt")
    for fold in (0, 1):
        (folds / f"fold_{fold}").mkdir(parents=True)
        if fold == 1:  # a different network: perturbed weights
            generator = torch.Generator().manual_seed(0)
            weights = {k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v for k, v in payload.model.items()}
            payload = payload.model_copy(update={"model": weights, "fold": 1})
        save_checkpoint(folds / f"fold_{fold}" / "checkpoint_best.pt", payload)
    return folds


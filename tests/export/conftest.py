from __future__ import annotations

from pathlib import Path

import torch

from tests.cli.conftest import run_cli  # noqa: F401  (in-process `medseg ...` runner)

#: Tiny plans as in tests/models/test_contract.py: the 3D one anisotropic (z pooled once less), the 2D one 4 stages deep.
PLANS = {3: {"patch_size": [16, 16, 8], "spacing": [1.0, 1.0, 2.5]}, 2: {"patch_size": [32, 32], "spacing": [1.0, 1.0], "slice_axis": 2}}


def registry_checkpoint(path: Path, name: str, dims: int = 3, norm: str = "instance", seed: int = 0, classes: int = 3,
                        fold: int | None = None) -> Path:
    """A randomly initialised registry network ``name`` (4-16 features) saved as an inference checkpoint with a CT plan.

    Batch-norm running statistics are moved off their initial values (a few training-mode passes), so a network
    left in training mode would give other logits than the same network in eval mode.
    """
    from medseg.bench.infer import benchmark_plan
    from medseg.config.schema import RunConfig
    from medseg.models.registry import build_model
    from medseg.schema.plan import Plan
    from medseg.train.checkpoint import inference_checkpoint, save_checkpoint

    data = benchmark_plan(classes, (1.0, 1.0, 2.5)).model_dump(mode="json")
    data["configurations"] = {"tiny": {**PLANS[dims], "batch_size": 2}}
    data["aliases"] = {}
    plan = Plan.model_validate(data)
    configuration = plan.configuration("tiny")
    config = RunConfig.model_validate({"model": {"name": name, "base_features": 4, "max_features": 16, "norm": norm}})
    torch.manual_seed(seed)
    network = build_model(config.model, 1, classes, configuration.network_plan())
    if norm == "batch":
        network.train()
        with torch.no_grad():
            for _ in range(2):
                network(3.0 + 2.0 * torch.randn(2, 1, *configuration.patch))
    network.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, inference_checkpoint(network, config, plan, configuration, in_channels=1, fold=fold))


def fold_folder(folder: Path, seeds: list[int], name: str = "dynunet") -> Path:
    """``folder/fold_<k>/checkpoint_best.pt``: one network per seed, a model of ``len(seeds)`` folds."""
    for fold, seed in enumerate(seeds):
        registry_checkpoint(folder / f"fold_{fold}" / "checkpoint_best.pt", name, seed=seed, fold=fold)
    return folder

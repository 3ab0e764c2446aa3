"""Small valid plans and checkpoints for tests that need the typed objects, not a dataset."""

from __future__ import annotations

import torch

from medseg.config.schema import RunConfig
from medseg.schema import Plan


def tiny_plan(classes: int = 3, spacing=(2.0, 2.0, 3.0), patch=(32, 32, 16), channels: int = 1) -> Plan:
    normalization = [{"channel": c, "name": f"MR{c}", "modality": "MR", "scheme": "zscore"} for c in range(channels)]
    return Plan.model_validate({
        "dataset": "Tiny", "labels": {k: ("background" if k == 0 else f"class_{k}") for k in range(classes)},
        "target_spacing": list(spacing),
        "preprocessing": {"target_spacing": list(spacing), "num_channels": channels, "labels": list(range(classes)), "normalization": normalization},
        "configurations": {"3d_fullres": {"patch_size": list(patch), "spacing": list(spacing), "batch_size": 2},
                           "2d": {"patch_size": list(patch[:2]), "spacing": list(spacing[:2]), "batch_size": 4, "slice_axis": 2}},
        "aliases": {"3d": "3d_fullres"},
    })


def tiny_payload(network: torch.nn.Module | None = None, **updates):
    """An inference checkpoint of a linear layer (the schema does not care what the weights are)."""
    from medseg.train.checkpoint import inference_checkpoint

    plan = tiny_plan()
    network = network or torch.nn.Linear(3, 2)
    payload = inference_checkpoint(network, RunConfig(), plan, plan.configuration("3d"), in_channels=1, epoch=updates.pop("epoch", 0))
    return payload.model_copy(update=updates) if updates else payload

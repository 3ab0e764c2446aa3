"""Load what `medseg infer` predicts with: one checkpoint, a run folder, or a folder of folds.

Every network of an ensemble must share the plan's preprocessing, the labels, the input channels
and the patch size: the case is then preprocessed once and one sliding-window pass averages the
folds' softmax inside each window (see :mod:`medseg.infer.predictor`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg.errors import InputError
from medseg.models.config import ModelConfig
from medseg.models.registry import build_model
from medseg.train.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

BEST, LAST = "checkpoint_best.pt", "checkpoint_last.pt"
#: Preprocessed arrays are RAS; a 2D network sees axial slices along this axis (as in training).
SLICE_AXIS_2D = 2


@dataclass
class CheckpointInfo:
    path: Path
    sha256: str
    fold: int | None
    epoch: int | None
    validation: dict[str, Any] | None


@dataclass
class LoadedModel:
    """The networks of one model (one per fold) and everything needed to use them like in training."""

    networks: list[nn.Module]
    plan: dict[str, Any]
    labels: dict[int, str]
    in_channels: int
    patch_size: tuple[int, ...]
    name: str
    checkpoints: list[CheckpointInfo]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        return len(self.patch_size)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def folds(self) -> list[int | None]:
        return [info.fold for info in self.checkpoints]

    def model_id(self) -> dict[str, Any]:
        """Identifies the exact weights: a short digest over every checkpoint, the network name and folds."""
        combined = hashlib.sha256("".join(info.sha256 for info in self.checkpoints).encode()).hexdigest()
        return {
            "id": combined[:12],
            "name": self.name,
            "folds": self.folds,
            "checkpoints": [
                {"file": info.path.name, "sha256": info.sha256[:16], "fold": info.fold, "epoch": info.epoch,
                 "validation_mean_dice": None if not info.validation else info.validation.get("mean_dice")}
                for info in self.checkpoints
            ],
        }

    def to(self, device: torch.device) -> LoadedModel:
        self.networks = [network.to(device) for network in self.networks]
        return self


def _run_checkpoint(folder: Path) -> Path | None:
    for name in (BEST, LAST):
        if (folder / name).is_file():
            return folder / name
    return None


def resolve_checkpoints(model: str | Path) -> list[Path]:
    """A checkpoint file, a run folder (best, else last checkpoint) or a folder of ``fold_*`` run folders."""
    path = Path(model)
    if not path.exists():
        raise InputError(path, "model does not exist (expected a checkpoint .pt file, a run folder or a folder of fold_* run folders)")
    if path.is_file():
        return [path]
    single = _run_checkpoint(path)
    if single is not None:
        return [single]
    folds = sorted(entry for entry in path.iterdir() if entry.is_dir() and entry.name.startswith("fold_"))
    found = []
    for fold in folds:
        checkpoint = _run_checkpoint(fold)
        if checkpoint is None:
            log.warning("%s: no checkpoint in this fold folder; it is left out of the ensemble", fold)
        else:
            found.append(checkpoint)
    if not found:
        raise InputError(path, f"no {BEST} or {LAST} here nor in fold_* subfolders: not a medseg run folder")
    return found


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _preprocessing_key(plan: dict[str, Any]) -> str:
    return json.dumps({"preprocessing": plan.get("preprocessing"), "target_spacing": plan.get("target_spacing")}, sort_keys=True)


def _network(payload: dict[str, Any], path: Path) -> tuple[nn.Module, tuple[int, ...]]:
    try:
        spec = payload["model_spec"]
        model_config = ModelConfig(**payload["config"]["model"])
        network = build_model(model_config, int(spec["in_channels"]), int(spec["out_channels"]), spec["plan_configuration"])
        network.load_state_dict(payload["model"])
    except (KeyError, TypeError, RuntimeError, ValueError) as error:
        raise InputError(path, f"checkpoint does not describe a network this medseg can rebuild ({str(error).splitlines()[0][:200]})") from error
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network, tuple(int(s) for s in spec["plan_configuration"]["patch_size"])


def load_model(model: str | Path) -> LoadedModel:
    """Load every checkpoint of ``model`` onto the CPU (move with :meth:`LoadedModel.to`)."""
    paths = resolve_checkpoints(model)
    networks, infos = [], []
    reference: dict[str, Any] | None = None
    for path in paths:
        payload = load_checkpoint(path, map_location="cpu")
        for key in ("plan", "labels", "model_spec", "config"):
            if key not in payload:
                raise InputError(path, f"checkpoint has no '{key}' entry; it was not written by `medseg train`")
        network, patch = _network(payload, path)
        current = {
            "preprocessing": _preprocessing_key(payload["plan"]),
            "labels": {int(k): str(v) for k, v in payload["labels"].items()},
            "in_channels": int(payload["model_spec"]["in_channels"]),
            "patch": patch,
        }
        if reference is None:
            reference = current | {"plan": payload["plan"], "name": payload["model_spec"]["name"], "config": payload["config"], "path": path}
        else:
            for key in ("preprocessing", "labels", "in_channels", "patch"):
                if current[key] != reference[key]:
                    raise InputError(path, f"its {key.replace('_', ' ')} differs from {reference['path']}; folds of one ensemble must come from one plan")
        networks.append(network)
        infos.append(CheckpointInfo(path, file_sha256(path), payload.get("fold"), payload.get("epoch"), payload.get("validation")))
        del payload
    assert reference is not None
    log.info("loaded %d network(s) of %s (%s)", len(networks), model, reference["name"])
    return LoadedModel(networks, reference["plan"], reference["labels"], reference["in_channels"], reference["patch"],
                       reference["name"], infos, reference["config"])

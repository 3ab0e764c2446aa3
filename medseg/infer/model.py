"""Load what `medseg infer` predicts with: one checkpoint, a run folder, or a folder of folds.

Which weights of a run folder: ``final`` (default) is ``checkpoint_last.pt``, which the trainer writes last of all
when training ends (after the last epoch, or when the time budget runs out, after the final validation): the weights
training ended with, which is what nnU-Net serves (its ``checkpoint_final``). ``best`` is ``checkpoint_best.pt``, the
weights at the best EMA of validation Dice over the periodic validation cases. Each falls back to the other file, with
a warning, when its own is missing. Every place that turns a run folder into weights (`medseg infer`, `medseg export
onnx`, ``train.init_from``) resolves it here.

Every network of an ensemble must share the preprocessing (:meth:`medseg.schema.Plan.preprocessing_identity`,
the same identity the cache uses), the labels, the input channels and the window: the case is then
preprocessed once and one sliding-window pass averages the folds' probabilities inside each window
(see :mod:`medseg.infer.predictor`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ValidationError
from torch import nn

from medseg.errors import InputError
from medseg.models.config import ModelConfig
from medseg.models.registry import build_model
from medseg.schema.checkpoint import CheckpointPayload, ValidationScores
from medseg.schema.plan import Configuration, Plan
from medseg.schema.records import describe_validation_error
from medseg.train.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

BEST, LAST = "checkpoint_best.pt", "checkpoint_last.pt"
CheckpointChoice = Literal["final", "best"]
#: The files each choice reads in a run folder, the first one present wins.
CHECKPOINT_FILES: dict[str, tuple[str, str]] = {"final": (LAST, BEST), "best": (BEST, LAST)}


@dataclass
class CheckpointInfo:
    path: Path
    sha256: str
    fold: int | str | None
    epoch: int | None
    validation: ValidationScores | None


@dataclass
class LoadedModel:
    """The networks of one model (one per fold) and everything needed to use them like in training."""

    networks: list[nn.Module]
    plan: Plan
    configuration: Configuration
    labels: dict[int, str]
    in_channels: int
    name: str
    checkpoints: list[CheckpointInfo]
    config: dict[str, Any] = field(default_factory=dict)  # the run config saved at training time (RunConfig JSON)

    def __post_init__(self) -> None:
        if self.plan.has_regions:  # the label map holds what the regions paint, not every class of the dataset
            self.labels = self.plan.output_labels()

    @property
    def has_regions(self) -> bool:
        return self.plan.has_regions

    @property
    def probability_names(self) -> list[str]:
        """Names of the probability channels: one per region, or one per class (background first)."""
        return list(self.plan.regions) if self.plan.has_regions else [self.labels[k] for k in sorted(self.labels)]

    @property
    def patch_size(self) -> tuple[int, ...]:
        return self.configuration.patch

    @property
    def spatial_dims(self) -> int:
        return self.configuration.spatial_dims

    @property
    def num_classes(self) -> int:
        """Output channels of the networks (regions, or classes with background)."""
        return self.plan.num_outputs if self.plan.has_regions else len(self.labels)

    @property
    def folds(self) -> list[int | str | None]:
        return [info.fold for info in self.checkpoints]

    def model_id(self) -> dict[str, Any]:
        """Identifies the exact weights: a short digest over every checkpoint, the network name and folds."""
        combined = hashlib.sha256("".join(info.sha256 for info in self.checkpoints).encode()).hexdigest()
        return {
            "id": combined[:12],
            "name": self.name,
            "configuration": self.configuration.name,
            "folds": self.folds,
            "checkpoints": [
                {"file": info.path.name, "sha256": info.sha256[:16], "fold": info.fold, "epoch": info.epoch,
                 "validation_mean_dice": None if not info.validation else info.validation.mean_dice}
                for info in self.checkpoints
            ],
        }

    def to(self, device: torch.device) -> LoadedModel:
        self.networks = [network.to(device) for network in self.networks]
        return self


def _run_checkpoint(folder: Path, checkpoint: CheckpointChoice = "final", quiet: bool = False) -> Path | None:
    names = CHECKPOINT_FILES[checkpoint]
    for name in names:
        if (folder / name).is_file():
            if name != names[0] and not quiet:
                log.warning("%s: no %s (the %s weights); using %s", folder, names[0], checkpoint, name)
            return folder / name
    return None


def resolve_checkpoints(model: str | Path, checkpoint: CheckpointChoice = "final") -> list[Path]:
    """A checkpoint file, a run folder (its ``checkpoint`` weights: final or best) or a folder of ``fold_*`` run folders."""
    path = Path(model)
    if checkpoint not in CHECKPOINT_FILES:
        raise InputError(path, f"checkpoint '{checkpoint}': choose final or best")
    if not path.exists():
        raise InputError(path, "model does not exist (expected a checkpoint .pt file, a run folder or a folder of fold_* run folders)")
    if path.is_file():
        return [path]
    single = _run_checkpoint(path, checkpoint)
    if single is not None:
        return [single]
    folds = sorted(entry for entry in path.iterdir() if entry.is_dir() and entry.name.startswith("fold_"))
    found = []
    for fold in folds:
        found_here = _run_checkpoint(fold, checkpoint)
        if found_here is None:
            log.warning("%s: no checkpoint in this fold folder; it is left out of the ensemble", fold)
        else:
            found.append(found_here)
    if not found:
        # `medseg train DATASET` without -o writes runs/<dataset>/<configuration>/fold_k: name the configurations
        runs = sorted(entry for entry in path.iterdir() if entry.is_dir() and any(entry.glob("fold_*/checkpoint_*.pt")))
        hint = f"; it holds the run folder(s) {', '.join(str(run) for run in runs)}: pass one of those" if runs else ": not a medseg run folder"
        raise InputError(path, f"no {BEST} or {LAST} here nor in fold_* subfolders{hint}")
    return found


def unfinished_run(path: Path, payload: CheckpointPayload) -> str | None:
    """Why ``path`` (a ``checkpoint_last.pt``) does not hold the weights its run ended with, or None when it does.

    The trainer writes ``summary.json`` right after the last ``checkpoint_last.pt``, with the same iteration count;
    a run still going, killed, or resumed since holds an older summary or none.
    """
    if path.name != LAST or payload.training is None:
        return None
    try:
        ended = json.loads((path.parent / "summary.json").read_text()).get("iterations")
    except (OSError, ValueError, AttributeError):
        ended = None
    if ended == payload.training.iteration:
        return None
    return (f"its run has not finished (no summary.json for iteration {payload.training.iteration}): these are the weights of its last "
            f"save, epoch {payload.epoch}, not final ones")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def build_network(payload: CheckpointPayload, path: Path) -> nn.Module:
    """The checkpoint's network with its weights, in eval mode and without gradients."""
    spec = payload.model_spec
    try:
        model_config = ModelConfig(**(payload.config.get("model") or {}))
        network = build_model(model_config, spec.in_channels, spec.out_channels, spec.configuration)
        network.load_state_dict(payload.model)
    except ValidationError as error:
        raise InputError(path, f"checkpoint's model config is not valid here ({describe_validation_error(error)})") from error
    except (KeyError, TypeError, RuntimeError, ValueError) as error:
        raise InputError(path, f"checkpoint does not describe a network this medseg can rebuild ({str(error).splitlines()[0][:200]})") from error
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


def _ensemble_key(payload: CheckpointPayload) -> dict[str, Any]:
    return {
        "preprocessing": payload.plan.preprocessing_identity(payload.configuration),
        "labels": dict(payload.labels),
        "in channels": payload.model_spec.in_channels,
        "window": (payload.configuration.patch, payload.configuration.slice_axis),
    }


def load_model(model: str | Path, checkpoint: CheckpointChoice = "final") -> LoadedModel:
    """Load every checkpoint of ``model`` (of a run folder: its ``checkpoint`` weights) onto the CPU (move with :meth:`LoadedModel.to`)."""
    paths = resolve_checkpoints(model, checkpoint)
    networks, infos = [], []
    reference: tuple[CheckpointPayload, Path, dict[str, Any]] | None = None
    for path in paths:
        payload = load_checkpoint(path)
        unfinished = unfinished_run(path, payload)
        if unfinished:
            log.warning("%s: %s", path, unfinished)
        key = _ensemble_key(payload)
        if reference is None:
            reference = (payload.for_inference().model_copy(update={"model": {}}), path, key)
        else:
            for name, value in key.items():
                if value != reference[2][name]:
                    raise InputError(path, f"its {name} differs from {reference[1]}; folds of one ensemble must come from one plan")
        networks.append(build_network(payload, path))
        infos.append(CheckpointInfo(path, file_sha256(path), payload.fold, payload.epoch, payload.validation))
        del payload
    assert reference is not None
    first = reference[0]
    log.info("loaded %d network(s) of %s (%s, %s)", len(networks), model, first.model_spec.name, first.configuration.name)
    return LoadedModel(networks, first.plan, first.configuration, dict(first.labels), first.model_spec.in_channels,
                       first.model_spec.name, infos, first.config)


def is_onnx_model(model: str | Path) -> bool:
    """An ``.onnx`` file, or a folder of them without medseg checkpoints (what `medseg export onnx` writes)."""
    path = Path(model)
    if path.is_file():
        return path.suffix.lower() == ".onnx"
    return path.is_dir() and any(path.glob("*.onnx")) and not resolve_checkpoints_quietly(path)


def resolve_checkpoints_quietly(path: Path) -> bool:
    return _run_checkpoint(path, quiet=True) is not None or any(_run_checkpoint(fold, quiet=True) for fold in path.glob("fold_*") if fold.is_dir())


def load_for_backend(model: str | Path, backend: str, threads: int, checkpoint: CheckpointChoice = "final") -> LoadedModel:
    """``torch``: the checkpoint(s) (of a run folder: its ``checkpoint`` weights); ``onnxruntime``: exported ONNX
    file(s), whose weights were chosen at export; ``auto``: by what MODEL is."""
    if backend == "onnxruntime" or (backend == "auto" and is_onnx_model(model)):
        from medseg.export.onnx_runtime import load_onnx_model

        return load_onnx_model(model, threads=threads)
    return load_model(model, checkpoint)

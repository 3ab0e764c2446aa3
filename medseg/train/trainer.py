"""The training loop: one code path for CPU, CUDA and torchrun DDP.

Fixed-iteration epochs over random patches; the LR follows training progress (iterations or the
time budget, whichever is further), so ``train.max_minutes`` ends a run cleanly with an annealed
LR. Every ``checkpoint_every`` epochs the complete state is saved atomically to
``checkpoint_last.pt``; ``resume=True`` restores it exactly (weights, optimiser, grad scaler,
iteration/time counters, RNG states, history), so a run killed with SIGKILL continues from its
last checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from medseg.config import save_resolved
from medseg.data.cache import cached_case_ids, load_case_arrays
from medseg.data.plan import load_plan
from medseg.errors import ConfigError, InputError
from medseg.losses import build_loss
from medseg.models.registry import build_model
from medseg.run_config import RunConfig
from medseg.train import distributed
from medseg.train.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from medseg.train.environment import environment_report
from medseg.train.loader import PatchBatches, make_loader
from medseg.train.logbook import Logbook
from medseg.train.progress import TrainingProgress
from medseg.train.schedule import learning_rate, training_progress
from medseg.train.splits import load_or_create_splits
from medseg.train.validate import validate

log = logging.getLogger(__name__)

LAST, BEST = "checkpoint_last.pt", "checkpoint_best.pt"
SLICE_AXIS_2D = 2  # preprocessed arrays are RAS, so axis 2 runs inferior-superior: 2D = axial slices


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    iterations_done: int
    best_ema_dice: float
    last_validation: dict[str, Any] | None
    stopped_by_time: bool


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA device is available; use --set train.device=cpu")
    return device


def autocast_settings(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a GradScaler is needed)."""
    if device.type != "cuda" or amp == "off":
        return None, False
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    return torch.float16, True


def plan_configuration(plan: dict[str, Any], config: RunConfig) -> dict[str, Any]:
    """The plan's configuration with the config's overrides; a changed patch re-derives the topology."""
    name = config.train.configuration
    configurations = plan.get("configurations", {})
    if name not in configurations:
        raise ConfigError(f"train.configuration={name}: the plan has {', '.join(configurations) or 'no configurations'}")
    chosen = dict(configurations[name])
    if config.train.patch_size is not None:
        if len(config.train.patch_size) != len(chosen["patch_size"]):
            raise ConfigError(f"train.patch_size {config.train.patch_size} must have {len(chosen['patch_size'])} sizes for the {name} configuration")
        if list(config.train.patch_size) != list(chosen["patch_size"]):
            chosen = {key: value for key, value in chosen.items() if key not in ("kernel_sizes", "strides", "features", "features_per_stage")}
            chosen["patch_size"] = list(config.train.patch_size)
    if config.train.batch_size is not None:
        chosen["batch_size"] = config.train.batch_size
    return chosen


class Trainer:
    def __init__(self, config: RunConfig, cache_dir: str | Path, run_dir: str | Path, resume: bool = False, progress: bool = True) -> None:
        self.config, self.cache_dir, self.run_dir = config, Path(cache_dir), Path(run_dir)
        self.resume, self.show_progress = resume, progress
        train_config = config.train
        self.dist = distributed.init_distributed("cuda" if torch.cuda.is_available() and train_config.device != "cpu" else "cpu")
        self.device = resolve_device(train_config.device, self.dist.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
        torch.set_num_threads(train_config.threads or max(1, (os.cpu_count() or 1) // self.dist.world_size))
        self.autocast_dtype, use_scaler = autocast_settings(train_config.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

        plan_path = self.cache_dir / "plan.json"
        if not plan_path.is_file():
            raise InputError(self.cache_dir, "no plan.json here: run `medseg preprocess` first (or pass the raw dataset to `medseg train`)")
        self.plan = load_plan(plan_path)
        self.configuration = plan_configuration(self.plan, config)
        self.patch_size = tuple(int(s) for s in self.configuration["patch_size"])
        self.slice_axis = SLICE_AXIS_2D if len(self.patch_size) == 2 else None
        self.labels = {int(k): v for k, v in self.plan["labels"].items()}
        self.classes = sorted(label for label in self.labels if label > 0)
        self.in_channels = int(self.plan["preprocessing"]["num_channels"])
        spacing = np.asarray(self.plan["target_spacing"], dtype=float)
        self.anisotropic = bool(spacing.max() / spacing.min() > 3.0)

        case_ids = cached_case_ids(self.cache_dir)
        splits = load_or_create_splits(self.cache_dir / "splits.json", case_ids, train_config.num_folds, train_config.split_seed)
        if train_config.fold >= len(splits):
            raise ConfigError(f"train.fold={train_config.fold} but there are {len(splits)} folds")
        self.train_ids, self.val_ids = splits[train_config.fold]["train"], splits[train_config.fold]["val"]
        if train_config.val_max_cases:
            self.val_ids = self.val_ids[: train_config.val_max_cases]

        torch.manual_seed(train_config.seed + self.dist.rank)
        np.random.seed((train_config.seed + self.dist.rank) % 2**32)
        self.model_spec = {"name": config.model.name, "in_channels": self.in_channels, "out_channels": len(self.labels), "plan_configuration": self.configuration}
        self.network = build_model(config.model, self.in_channels, len(self.labels), self.configuration).to(self.device)
        self.loss = build_loss(config.loss).to(self.device)
        self.optimizer = self._optimizer()
        self.model = self.network
        if train_config.compile:
            self.model = torch.compile(self.model)
        if self.dist.enabled:
            self.model = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        self.epoch, self.iteration, self.elapsed_s = 0, 0, 0.0
        self.best_ema, self.ema = -math.inf, None
        self.history: list[dict] = []
        if resume:
            self._restore()

    # --- setup -----------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        train_config = self.config.train
        parameters = self.network.parameters()
        if train_config.optimizer == "sgd":
            return torch.optim.SGD(parameters, lr=train_config.lr, momentum=train_config.momentum, nesterov=train_config.nesterov, weight_decay=train_config.weight_decay)
        return torch.optim.AdamW(parameters, lr=train_config.lr, weight_decay=train_config.weight_decay)

    def _restore(self) -> None:
        path = self.run_dir / LAST
        if not path.is_file():
            raise InputError(path, "cannot resume: no last checkpoint in this run folder")
        payload = load_checkpoint(path, map_location=self.device)
        if payload["model_spec"] != self.model_spec:
            raise ConfigError(f"{path}: the checkpoint's network differs from the current config; resume with the run's own config.yaml")
        self.network.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scaler.load_state_dict(payload["scaler"])
        self.epoch, self.iteration = payload["epoch"], payload["scheduler"]["iteration"]
        self.elapsed_s = payload["scheduler"]["elapsed_s"]
        self.best_ema, self.ema = payload["best_ema_dice"], payload["ema_dice"]
        self.history = list(payload["history"])
        rng = payload["rng"].get(str(self.dist.rank))
        if rng is not None:
            restore_rng_state(rng)
        log.info("resumed %s at epoch %d (iteration %d, %.1f min trained)", self.run_dir, self.epoch, self.iteration, self.elapsed_s / 60)

    def num_workers(self) -> int:
        if self.config.train.num_workers is not None:
            return self.config.train.num_workers
        return 0 if self.device.type == "cpu" else min(8, max(1, (os.cpu_count() or 2) - 1))

    # --- checkpoints -----------------------------------------------------------------------
    def _payload(self, validation: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "model": self.network.state_dict(),
            "model_spec": self.model_spec,
            "config": self.config.model_dump(mode="json"),
            "plan": self.plan,
            "labels": {str(k): v for k, v in self.labels.items()},
            "normalization": self.plan["preprocessing"].get("normalization"),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "scheduler": {"iteration": self.iteration, "elapsed_s": self.elapsed_s},
            "epoch": self.epoch,
            "fold": self.config.train.fold,
            "train_cases": self.train_ids,
            "val_cases": self.val_ids,
            "best_ema_dice": self.best_ema,
            "ema_dice": self.ema,
            "history": self.history,
            "validation": None if validation is None else {"dice": {str(k): v for k, v in validation["dice"].items()}, "mean_dice": validation["mean_dice"]},
            "rng": {str(self.dist.rank): capture_rng_state()},
        }

    # --- loop ------------------------------------------------------------------------------
    def _step(self, batch: dict[str, torch.Tensor]) -> float:
        image = batch["image"].to(self.device, non_blocking=True)
        label = batch["label"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            output = self.model(image)
        output = [o.float() for o in output] if isinstance(output, (list, tuple)) else output.float()
        loss = self.loss(output, label)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at iteration {self.iteration}; lower train.lr or disable AMP")
        self.scaler.scale(loss).backward()
        if self.config.train.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach().item())

    def _validate(self) -> dict[str, Any]:
        self.network.eval()
        cases = (load_case_arrays(self.cache_dir, case_id) for case_id in self.val_ids)
        result = validate(self.network, cases, self.classes, self.patch_size, self.device, self.config.train.val_overlap,
                          self.config.train.val_sw_batch_size, self.autocast_dtype, self.slice_axis)
        self.network.train()
        return result

    def fit(self) -> TrainResult:
        train_config = self.config.train
        main = self.dist.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_resolved(self.config, self.run_dir / "config.yaml")
            (self.run_dir / "environment.json").write_text(json.dumps(environment_report(self.device), indent=2))
        logbook = Logbook(self.run_dir, train_config.tensorboard, self.history) if main else None
        budget_s = train_config.max_minutes * 60 if train_config.max_minutes else None
        total = train_config.epochs * train_config.iterations_per_epoch
        batch_size = int(self.configuration["batch_size"])
        stopped_by_time, validation, lr = False, None, train_config.lr
        progress = TrainingProgress(enabled=self.show_progress and main, total=total)
        self.network.train()
        with progress:
            while self.epoch < train_config.epochs and not stopped_by_time:
                dataset = PatchBatches(lambda case_id: load_case_arrays(self.cache_dir, case_id), self.train_ids, self.patch_size, batch_size,
                                       self.config.augment, train_config.foreground_share, train_config.iterations_per_epoch,
                                       train_config.seed, self.epoch, self.dist.rank, self.anisotropic, self.slice_axis)
                loader = make_loader(dataset, self.num_workers(), pin_memory=self.device.type == "cuda")
                losses, wait_s, step_s = [], 0.0, 0.0
                epoch_start = time.perf_counter()
                tick = time.perf_counter()
                for batch in loader:
                    fetched = time.perf_counter()
                    wait_s += fetched - tick
                    fraction = training_progress(self.iteration, total, self.elapsed_s + (fetched - epoch_start), budget_s)
                    lr = learning_rate(train_config, fraction)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                    losses.append(self._step(batch))
                    self.iteration += 1
                    tick = time.perf_counter()
                    step_s += tick - fetched
                    out_of_time = bool(budget_s and self.elapsed_s + (tick - epoch_start) >= budget_s)
                    progress.update(self.epoch, fraction * total if budget_s else self.iteration, losses[-1], lr)
                    if distributed.any_rank(out_of_time, self.dist):
                        stopped_by_time = True
                        break
                self.elapsed_s += time.perf_counter() - epoch_start
                self.epoch += 1
                row = {"epoch": self.epoch, "iterations": self.iteration, "train_loss": distributed.mean_over_ranks(float(np.mean(losses)), self.dist),
                       "lr": lr, "epoch_s": time.perf_counter() - epoch_start, "step_s": step_s / max(len(losses), 1),
                       "data_wait_s": wait_s / max(len(losses), 1), "minutes": self.elapsed_s / 60}
                last = stopped_by_time or self.epoch >= train_config.epochs
                if main and (self.epoch % train_config.val_every == 0 or last):
                    validation_start = time.perf_counter()
                    validation = self._validate()
                    mean = validation["mean_dice"]
                    self.ema = mean if self.ema is None or math.isnan(self.ema) else train_config.ema_alpha * self.ema + (1 - train_config.ema_alpha) * mean
                    row.update({f"val_dice_{self.labels[k]}": v for k, v in validation["dice"].items()})
                    row.update({"val_mean_dice": mean, "val_ema_dice": self.ema, "val_s": time.perf_counter() - validation_start})
                    self.elapsed_s += time.perf_counter() - validation_start
                    progress.note(f"epoch {self.epoch}: val Dice " + ", ".join(f"{self.labels[k]} {v:.3f}" for k, v in validation["dice"].items()))
                if main:
                    logbook.log_epoch(row)
                    self.history = logbook.rows
                    if "val_ema_dice" in row and self.ema > self.best_ema:
                        self.best_ema = self.ema
                        save_checkpoint(self.run_dir / BEST, self._payload(validation))
                    if self.epoch % train_config.checkpoint_every == 0 or last:
                        save_checkpoint(self.run_dir / LAST, self._payload(validation))
                distributed.barrier(self.dist)
        if main:
            logbook.plot()
            logbook.close()
            summary = {"fold": train_config.fold, "epochs": self.epoch, "iterations": self.iteration, "minutes": self.elapsed_s / 60,
                       "stopped_by_time": stopped_by_time, "best_ema_dice": self.best_ema,
                       "final_validation": None if validation is None else {self.labels[k]: v for k, v in validation["dice"].items()},
                       "final_mean_dice": None if validation is None else validation["mean_dice"]}
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        distributed.shutdown(self.dist)
        return TrainResult(self.run_dir, self.epoch, self.iteration, self.best_ema, validation, stopped_by_time)

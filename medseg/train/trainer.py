"""The training loop, assembled from parts: one code path for CPU, CUDA and torchrun DDP.

The parts are built from the config and passed around, never subclassed per variant: the data
stream (:mod:`medseg.train.loader`), the step (:class:`~medseg.train.step.TrainStep`), the
validators (:mod:`medseg.train.validate`), checkpoints (:mod:`medseg.train.checkpoint`) and the
logbook. Fixed-iteration epochs over random patches; the LR follows training progress (iterations
or the time budget, whichever is further), so ``train.max_minutes`` ends a run cleanly with an
annealed LR. The resume checkpoint is written by time (``checkpoint_minutes``) and at the end;
``resume=True`` restores it exactly (weights, optimiser, grad scaler, counters, every rank's RNG
state, history), so a run killed with SIGKILL continues from its last checkpoint as if it had not
stopped. Everything runs inside :func:`medseg.runtime.runtime_scope`, so training leaves no global
torch state (threads, cudnn, RNG) behind. ``train.init_from`` starts the network from another run's weights
(:mod:`medseg.train.init_from`; ``resume`` wins over it) and ``train.freeze_encoder_epochs`` keeps the
encoder fixed for the first epochs (:mod:`medseg.train.freeze`).

``checkpoint_last.pt`` is written last of all when training ends (after the final validation, also when the time
budget ends it, then ``summary.json``), so it holds the final weights, which `medseg infer` serves by default.
``checkpoint_best.pt`` follows an EMA of the mean validation Dice over one fixed set of cases, the periodic
validation's: the final validation of every held-out case enters it with those cases' scores only. The final
validation also writes each held-out case's prediction on its raw grid into ``validation/``
(:mod:`medseg.train.validation_outputs`), the files a cross-validation summary is computed from.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from medseg.config.loader import save_resolved
from medseg.config.schema import RunConfig
from medseg.data.cache import cached_case_ids, load_case_arrays, read_cache
from medseg.data.regions import regions_to_labels
from medseg.errors import ConfigError, InputError
from medseg.infer.predictor import WindowSpec, default_sw_batch_size
from medseg.io.atomic import write_json
from medseg.losses import build_loss
from medseg.models.registry import build_model, model_topology
from medseg.runtime import Runtime, available_cores, resolve_amp, resolve_device, resolve_runtime, runtime_scope
from medseg.schema.checkpoint import CheckpointPayload, ModelSpec, TrainingState, ValidationScores
from medseg.train import distributed
from medseg.train.checkpoint import capture_rng_state, inference_checkpoint, load_checkpoint, restore_rng_state, save_checkpoint
from medseg.train.environment import environment_report
from medseg.train.freeze import EncoderFreeze, prime_momentum
from medseg.train.init_from import (TransferReport, fresh_tensor_names, initialise_from, model_config_of, read_report, resolve_init_checkpoint,
                                   write_report)
from medseg.train.loader import PatchSampling, PatchStream, default_workers, make_loader
from medseg.train.logbook import Logbook
from medseg.train.progress import TrainingProgress
from medseg.train.schedule import learning_rate, training_progress
from medseg.train.splits import TRAINING_CASES, fold_cases
from medseg.train.step import TrainStep, make_optimizer
from medseg.train.validate import PatchDice, summarize, validate_volumes
from medseg.train.validation_outputs import VALIDATION_FOLDER, ValidationWriter

log = logging.getLogger(__name__)

LAST, BEST = "checkpoint_last.pt", "checkpoint_best.pt"
SYNC_EVERY = 10  # steps between reading losses back from the device


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    iterations_done: int
    best_ema_dice: float
    last_validation: dict[str, Any] | None
    stopped_by_time: bool
    names: dict[Any, str] = field(default_factory=dict)  # last_validation["dice"] key -> label or region name


@dataclass
class Counters:
    """Where a run stands; saved in the resume checkpoint."""

    epoch: int = 0
    iteration: int = 0
    elapsed_s: float = 0.0
    best_ema: float = -math.inf
    ema: float | None = None
    history: list[dict] = field(default_factory=list)


class Trainer:
    def __init__(self, config: RunConfig, cache_dir: str | Path, run_dir: str | Path, resume: bool = False, progress: bool = True) -> None:
        self.config, self.cache_dir, self.run_dir = config, Path(cache_dir), Path(run_dir)
        self.resume, self.show_progress = resume, progress
        train = config.train
        self.dist = distributed.init_distributed("cuda" if torch.cuda.is_available() and train.device != "cpu" else "cpu")
        self.plan, info = read_cache(self.cache_dir)
        # train.patch_size and model.* knobs re-derive the plan's network by its own knobs; the checkpoint keeps the result
        self.configuration = self.plan.configuration(train.configuration).with_overrides(train.patch_size, train.batch_size,
                                                                                         config.model.shape_overrides())
        if info.preprocessing_hash != self.plan.preprocessing_identity(self.configuration):
            raise InputError(self.cache_dir, f"holds the {info.configuration} grid, not {self.configuration.name}'s; "
                                             f"train from the raw dataset (medseg prepares each configuration's cache)")
        self.labels = dict(self.plan.labels)
        self.regions = self.plan.region_values() if self.plan.has_regions else None
        # What validation scores: each region (by name), or each foreground class (by value).
        self.targets = dict(self.plan.regions) if self.regions else {label: (label,) for label in self.plan.foreground_labels}
        self.names = {key: key for key in self.targets} if self.regions else {label: self.labels[label] for label in self.targets}
        self.classes = list(self.targets)
        self.in_channels = self.plan.num_channels
        self.train_ids, self.val_ids, self.val_kind = fold_cases(self.cache_dir, cached_case_ids(self.cache_dir), train)
        # the cases of every periodic validation: the one fixed set the best-checkpoint EMA follows
        self.ema_ids = self.val_ids[: train.val_max_cases] if train.val_max_cases else list(self.val_ids)
        if self.val_kind == TRAINING_CASES:
            log.warning("fold all: training on all %d cases; validation runs on %s, so its scores say nothing about unseen data",
                        len(self.train_ids), TRAINING_CASES)
        device = resolve_device(train.device, self.dist.local_rank, "train.device")
        cores = max(1, available_cores() // max(self.dist.world_size, 1))
        self.workers = train.num_workers if train.num_workers is not None else default_workers(device, cores)
        threads = train.threads or max(1, cores - (self.workers if device.type == "cpu" else 0))  # loader workers own their cores
        self.runtime: Runtime = resolve_runtime(str(device), train.amp, threads, local_rank=self.dist.local_rank, training=True,
                                                deterministic=train.deterministic)
        self.model_spec = ModelSpec(name=config.model.name, in_channels=self.in_channels, out_channels=self.plan.num_outputs, configuration=self.configuration)
        if resume and (self.run_dir / LAST).is_file():
            self._keep_stored_layout(load_checkpoint(self.run_dir / LAST).model_spec)
        self.counters = Counters()
        self.step: TrainStep | None = None
        self.transfer: TransferReport | None = None
        self.freeze: EncoderFreeze | None = None
        if resume and not (self.run_dir / LAST).is_file():
            raise InputError(self.run_dir / LAST, "cannot resume: no last checkpoint in this run folder")
        self.init_source: tuple[Path, str] | None = None
        if train.init_from and resume:
            log.info("resuming %s: its checkpoint already holds the fine-tuned weights, so train.init_from (%s) is not loaded again",
                     self.run_dir, train.init_from)
        elif train.init_from:
            self.init_source = resolve_init_checkpoint(train.init_from)  # a missing source fails here, before any training
        if train.freeze_encoder_epochs and not train.init_from:
            log.warning("train.freeze_encoder_epochs=%d without train.init_from freezes a randomly initialised encoder",
                        train.freeze_encoder_epochs)

    # --- parts -----------------------------------------------------------------------------
    def _build(self) -> TrainStep:
        """Network, loss, optimizer and scaler on the device (inside the runtime scope: seeded init)."""
        train = self.config.train
        network = build_model(self.config.model, self.in_channels, self.plan.num_outputs, self.configuration).to(self.runtime.device)
        channels_last = train.channels_last and self.configuration.spatial_dims == 3
        if channels_last:
            network = network.to(memory_format=torch.channels_last_3d)
        fused = train.fused_optimizer == "on" or (train.fused_optimizer == "auto" and self.runtime.cuda)
        optimizer = make_optimizer(network, train.optimizer, train.lr, train.momentum, train.nesterov, train.weight_decay, fused)
        scaler = torch.amp.GradScaler("cuda", enabled=self.runtime.needs_grad_scaler)
        objectness = self._objectness_values(network)
        loss = build_loss(self.config.loss, self.regions, self.plan.preprocessing.ignore_label, objectness_values=objectness)
        model, eager = self._wrap(network)
        return TrainStep(model, network, loss.to(self.runtime.device), optimizer, scaler, self.runtime, train.grad_clip, channels_last,
                         eager_model=eager, forward_kwargs={"objectness": True} if objectness else {})

    def _objectness_values(self, network: torch.nn.Module) -> tuple[int, ...] | None:
        """For a network with a lesion-centre head (model lesion_instances): the label values its targets are made from."""
        from medseg.losses.objectness import objectness_label_values
        from medseg.models.lesion_instances import has_objectness

        if not has_objectness(network):
            return None
        settings = self.config.loss.objectness
        values = objectness_label_values(settings, self.config.infer.lesion_labels, self.labels)
        if settings.weight == 0:
            log.warning("loss.objectness.weight is 0: the lesion-centre head learns only through the segmentation output")
        log.info("objectness term on the lesions of %s (weight %g)", ", ".join(self.labels[v] for v in values), settings.weight)
        return values

    def _wrap(self, network: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module | None]:
        """What runs forward (DDP and/or compiled) and, when compiled in one process, its eager fallback.

        compile(DDP(network)), as PyTorch recommends. The eager fallback is for one process only: under DDP a compile
        failure on one rank would leave the others' collectives waiting, so there it is an error. DDP registers the
        parameters that require a gradient when it is built, and a compiled graph keeps the requires_grad it was
        traced with, so freezing or unfreezing the encoder wraps (and compiles) again.
        """
        train = self.config.train
        model = network
        if self.dist.enabled:
            model = DistributedDataParallel(network, device_ids=[self.runtime.device.index] if self.runtime.cuda else None)
        compiled = train.compile == "on" or (train.compile == "auto" and self.runtime.cuda)
        return (torch.compile(model) if compiled else model), (model if compiled and not self.dist.enabled else None)

    def sampling(self, augment: bool = True) -> PatchSampling:
        augment_config = self.config.augment if augment else self.config.augment.model_copy(update={"enabled": False})
        return PatchSampling(self.configuration.patch, self.configuration.batch_size, self.config.train.foreground_share, augment_config,
                             self.configuration.anisotropic, self.configuration.slice_axis,
                             tuple(self.regions) if self.regions else None)

    def stream(self, start: int, total: int) -> PatchStream:
        return PatchStream(lambda case_id: load_case_arrays(self.cache_dir, case_id), self.train_ids, self.sampling(), self.config.train.seed,
                           start, total, self.dist.rank)

    def window_spec(self) -> WindowSpec:
        train = self.config.train
        sw_batch = train.val_sw_batch_size or default_sw_batch_size(self.runtime.device, self.configuration.patch)
        return WindowSpec(self.configuration.patch, train.val_overlap, sw_batch, slice_axis=self.configuration.slice_axis,
                          activation="sigmoid" if self.regions else "softmax")

    def _patch_dice(self) -> PatchDice:
        count = self.config.train.val_patch_batches
        if not count or not self.val_ids:
            return PatchDice([], self.targets, region_outputs=bool(self.regions))
        stream = PatchStream(lambda case_id: load_case_arrays(self.cache_dir, case_id), self.val_ids, self.sampling(augment=False),
                             self.config.train.seed + 7919, 0, count)
        return PatchDice(list(stream), self.targets, ignore_label=self.plan.preprocessing.ignore_label, region_outputs=bool(self.regions))

    @property
    def session(self):
        """``with trainer.session: ...``: the runtime scope with the parts built (benchmarks step inside it)."""
        trainer = self

        class _Session:
            def __enter__(self):
                self._scope = runtime_scope(trainer.runtime, seed=trainer.config.train.seed + trainer.dist.rank)
                self._scope.__enter__()
                trainer.step = trainer._build()
                return trainer.step

            def __exit__(self, *exc):
                return self._scope.__exit__(*exc)

        return _Session()

    # --- checkpoints -----------------------------------------------------------------------
    def _payload(self, validation: dict[str, Any] | None, rng: dict[str, Any] | None) -> CheckpointPayload:
        """Inference checkpoint, plus the resume state when ``rng`` (every rank's RNG states) is given."""
        step, counters = self.step, self.counters
        assert step is not None
        scores = None if validation is None else ValidationScores(
            dice={str(k): v for k, v in validation["dice"].items()}, mean_dice=validation["mean_dice"], kind=validation["kind"])
        payload = inference_checkpoint(step.network, self.config, self.plan, self.configuration, in_channels=self.in_channels,
                                       out_channels=self.model_spec.out_channels, fold=self.config.train.fold, epoch=counters.epoch,
                                       train_cases=self.train_ids, val_cases=self.val_ids, validation=scores)
        if rng is None:
            return payload
        training = TrainingState(optimizer=step.optimizer.state_dict(), scaler=step.scaler.state_dict(), iteration=counters.iteration,
                                 elapsed_s=counters.elapsed_s, best_ema_dice=counters.best_ema, ema_dice=counters.ema,
                                 history=counters.history, rng=rng)
        return payload.model_copy(update={"training": training})

    def _save_last(self, validation: dict[str, Any] | None) -> None:
        """Every rank takes part: each contributes its RNG state; rank 0 writes."""
        states = distributed.gather_to_main(capture_rng_state(self.runtime.device), self.dist)
        if self.dist.is_main:
            save_checkpoint(self.run_dir / LAST, self._payload(validation, {str(rank): state for rank, state in enumerate(states)}))

    def _restore(self) -> None:
        path = self.run_dir / LAST
        if not path.is_file():
            raise InputError(path, "cannot resume: no last checkpoint in this run folder")
        payload = load_checkpoint(path)  # onto the CPU; tensors move to the device below
        if not self._same_network(payload) or payload.training is None:
            raise ConfigError(f"{path}: the checkpoint's network or resume state differs from the current config; resume with the run's own config.yaml")
        step = self.step
        assert step is not None
        step.network.load_state_dict(payload.model)
        step.optimizer.load_state_dict(payload.training.optimizer)  # moves the state to the parameters' device
        step.scaler.load_state_dict(payload.training.scaler)
        state = payload.training
        self.counters = Counters(payload.epoch, state.iteration, state.elapsed_s, state.best_ema_dice, state.ema_dice, list(state.history))
        rng = state.rng.get(str(self.dist.rank))
        if rng is not None:
            restore_rng_state(rng)
        log.info("resumed %s at epoch %d (iteration %d, %.1f min trained)", self.run_dir, payload.epoch, state.iteration, state.elapsed_s / 60)

    def _keep_stored_layout(self, stored: ModelSpec) -> None:
        """A run of medseg <= 0.2 (its configuration has no knobs) resumes with the network it was training: the rule's
        knobs, applied to its config now, may give other widths (a lone ``model.base_features`` now keeps the plan's cap)."""
        topology = stored.configuration.topology
        if topology is not None and topology.knobs is not None:
            return
        unshaped = {"topology": None, "estimated_memory_gb": None}
        if stored.model_copy(update={"configuration": stored.configuration.model_copy(update=unshaped)}) == \
                self.model_spec.model_copy(update={"configuration": self.configuration.model_copy(update=unshaped)}):
            self.configuration = stored.configuration
            self.model_spec = stored

    def _same_network(self, payload: CheckpointPayload) -> bool:
        """Whether the checkpoint holds this run's network: the same spec, or (a checkpoint of medseg <= 0.2, whose
        configuration has no knobs) the same spec apart from the topology, and the same layout once rebuilt."""
        if payload.model_spec == self.model_spec:
            return True
        stored, current = payload.model_spec, self.model_spec
        if stored.configuration.topology is not None and stored.configuration.topology.knobs is not None:
            return False
        unshaped = {"topology": None, "estimated_memory_gb": None}
        if stored.model_copy(update={"configuration": stored.configuration.model_copy(update=unshaped)}) != \
                current.model_copy(update={"configuration": current.configuration.model_copy(update=unshaped)}):
            return False
        before = model_topology(model_config_of(payload), stored.configuration)
        after = model_topology(self.config.model, current.configuration)
        return (before.kernel_sizes, before.strides, before.features) == (after.kernel_sizes, after.strides, after.features)

    # --- fine-tuning -----------------------------------------------------------------------
    def _init_from(self) -> None:
        """Every rank loads the same weights (so DDP replicas agree); rank 0 reports."""
        assert self.step is not None and self.init_source is not None
        path, chosen = self.init_source
        self.transfer = initialise_from(self.step.network, self.config.train.init_from, path, chosen, self.config.model,
                                        self.model_spec, self.plan)
        if self.dist.is_main:
            self.transfer.log()

    def _apply_freeze(self) -> None:
        """Before each epoch: the encoder is frozen while fewer than train.freeze_encoder_epochs epochs are done."""
        step, epochs = self.step, self.config.train.freeze_encoder_epochs
        assert step is not None
        if not epochs:
            return
        if self.freeze is None:  # the report of a resumed run is the one written when it started
            record = self.transfer.to_record() if self.transfer is not None else read_report(self.run_dir)
            self.freeze = EncoderFreeze.build(step.network, self.config.model.name, epochs, fresh_tensor_names(record))
        changed = self.freeze.update(self.counters.epoch)
        if not self.freeze.frozen:  # also when a resume lands at or after the unfreeze: the restored optimizer holds no
            prime_momentum(step.optimizer, self.freeze.parameters)  # encoder buffers yet, which fused SGD refuses
        if not changed:
            return
        compiled = hasattr(step.model, "_orig_mod")  # not after a compile failure fell back to eager
        if compiled:
            torch.compiler.reset()  # the compiled graph does not see requires_grad change: compile again
        if compiled or self.dist.enabled:
            step.model = step.eager_model = None  # the old DDP reducer goes before the new one registers its hooks
            step.model, step.eager_model = self._wrap(step.network)

    # --- loop ------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        with self.session:
            if self.resume:
                self._restore()
            elif self.init_source is not None:
                self._init_from()
            try:
                return self._fit()
            finally:
                distributed.shutdown(self.dist)

    def _validate(self, final: bool) -> dict[str, Any]:
        """Every validation case at the end (each written to ``validation/`` when held out), else the fixed EMA cases."""
        ids = self.val_ids if final else self.ema_ids
        cases = (load_case_arrays(self.cache_dir, case_id) for case_id in ids)
        assert self.step is not None
        order = self.plan.regions_class_order or []
        to_labels = (lambda probabilities: regions_to_labels(probabilities, order)) if self.regions else None
        # Full volumes are predicted at the precision `medseg infer` will use for this run (its infer.amp, which the run
        # config carries; fp32 on a CPU by default, where training may run in bf16), so the reported Dice is the users'.
        inference = dataclasses.replace(self.runtime, autocast_dtype=resolve_amp(self.config.infer.amp, self.runtime.device))
        writer = None
        if final and self.val_kind != TRAINING_CASES and ids:
            writer = ValidationWriter(self.cache_dir, self.run_dir / VALIDATION_FOLDER, ids, order if self.regions else None, self.runtime.device)
        return validate_volumes(self.step.network, cases, self.targets, self.window_spec(), inference, self.plan.num_outputs,
                                kind=self.val_kind, to_labels=to_labels, ignore_label=self.plan.preprocessing.ignore_label,
                                on_probabilities=writer)

    def _ema_validation(self, validation: dict[str, Any]) -> dict[str, Any]:
        """``validation`` over the fixed EMA cases only, so every point of the EMA is a mean over the same cases."""
        per_case = validation["per_case"]
        if list(per_case) == self.ema_ids:
            return validation
        kept = {case_id: per_case[case_id] for case_id in self.ema_ids if case_id in per_case}
        return summarize(kept, self.targets, f"{validation['kind']}, its {len(kept)} periodic validation case(s)")

    def _start_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_resolved(self.config, self.run_dir / "config.yaml")
        if not self.resume:
            write_report(self.run_dir, self.transfer)
        precision = self.runtime.describe()["amp"] or "fp32"
        before = self.run_dir / "environment.json"
        if self.resume and before.is_file():  # `auto` resolves per machine: a resume elsewhere may change the step's precision
            earlier = json.loads(before.read_text()).get("training_precision")
            if earlier and earlier != precision:
                log.warning("resumed with %s training steps where the run started with %s (train.amp=%s resolves per machine); "
                            "set train.amp=%s to keep the run exact", precision, earlier, self.config.train.amp,
                            {"fp32": "off", "bfloat16": "bf16", "float16": "fp16"}.get(earlier, earlier))
        log.info("training steps in %s on %s", precision, self.runtime.device)
        write_json(before, environment_report(self.runtime.device) | {"loader_workers": self.workers, "training_precision": precision})

    def _fit(self) -> TrainResult:
        train, counters, step = self.config.train, self.counters, self.step
        assert step is not None
        main = self.dist.is_main
        if main:
            self._start_files()
        logbook = Logbook(self.run_dir, train.tensorboard, counters.history) if main else None
        budget_s = train.max_minutes * 60 if train.max_minutes else None
        total = train.epochs * train.iterations_per_epoch
        patch_dice = self._patch_dice() if main else None
        loader = iter(make_loader(self.stream(counters.iteration, total), self.workers, pin_memory=self.runtime.cuda))
        stopped_by_time, validation, lr, last_save = False, None, train.lr, time.perf_counter()
        step.network.train()
        with TrainingProgress(enabled=self.show_progress and main, total=total) as progress:
            while counters.epoch < train.epochs and not stopped_by_time:
                self._apply_freeze()
                row, stopped_by_time, lr = self._epoch(loader, budget_s, total, progress)
                if self.freeze is not None:
                    row["encoder_frozen"] = int(self.freeze.frozen)
                last = stopped_by_time or counters.epoch >= train.epochs
                validation = self._after_epoch(row, last, patch_dice, progress) or validation
                if main:
                    logbook.log_epoch(row)
                    counters.history = logbook.rows
                due = bool(train.checkpoint_every and counters.epoch % train.checkpoint_every == 0)
                due = due or time.perf_counter() - last_save >= train.checkpoint_minutes * 60
                if distributed.any_rank(due or last, self.dist):
                    self._save_last(validation)
                    last_save = time.perf_counter()
                distributed.barrier(self.dist)
        if main:
            self._finish(logbook, validation, stopped_by_time)
        return TrainResult(self.run_dir, counters.epoch, counters.iteration, counters.best_ema, validation, stopped_by_time, dict(self.names))

    def _epoch(self, loader, budget_s: float | None, total: int, progress: TrainingProgress) -> tuple[dict[str, Any], bool, float]:
        train, counters, step = self.config.train, self.counters, self.step
        losses: list[float] = []
        wait_s = step_s = 0.0
        epoch_start = tick = time.perf_counter()
        stopped, lr, done = False, train.lr, 0
        for _ in range(train.iterations_per_epoch):
            batch = next(loader)
            fetched = time.perf_counter()
            wait_s += fetched - tick
            fraction = training_progress(counters.iteration, total, counters.elapsed_s + (fetched - epoch_start), budget_s)
            lr = learning_rate(train, fraction)
            step(batch, lr)
            counters.iteration += 1
            done += 1
            if done % SYNC_EVERY == 0:
                losses += step.losses_since_sync(counters.iteration)
            tick = time.perf_counter()
            step_s += tick - fetched
            out_of_time = bool(budget_s and counters.elapsed_s + (tick - epoch_start) >= budget_s)
            done_fraction = fraction if budget_s else counters.iteration / max(total, 1)
            progress.update(counters.epoch, done_fraction, counters.iteration, losses[-1] if losses else float("nan"), lr)
            if distributed.any_rank(out_of_time, self.dist):
                stopped = True
                break
        losses += step.losses_since_sync(counters.iteration)
        counters.elapsed_s += time.perf_counter() - epoch_start
        counters.epoch += 1
        row = {"epoch": counters.epoch, "iterations": counters.iteration,
               "train_loss": distributed.mean_over_ranks(float(np.mean(losses)) if losses else float("nan"), self.dist),
               "lr": lr, "epoch_s": time.perf_counter() - epoch_start, "step_s": step_s / max(done, 1),
               "data_wait_s": wait_s / max(done, 1), "minutes": counters.elapsed_s / 60}
        return row, stopped, lr

    def _after_epoch(self, row: dict[str, Any], last: bool, patch_dice: PatchDice | None, progress: TrainingProgress) -> dict[str, Any] | None:
        """Patch Dice every epoch; full-volume validation every ``val_every`` epochs (bounded) and at the end (every case)."""
        train, counters = self.config.train, self.counters
        if not self.dist.is_main:
            return None
        start = time.perf_counter()
        if patch_dice is not None and patch_dice.batches:
            row.update({f"patch_dice_{self.names[k]}": v for k, v in patch_dice(self.step.network, self.runtime).items()})
        validation = None
        if counters.epoch % train.val_every == 0 or last:
            validation = self._validate(final=last)
            tracked = self._ema_validation(validation)
            mean = tracked["mean_dice"]
            counters.ema = mean if counters.ema is None or math.isnan(counters.ema) else train.ema_alpha * counters.ema + (1 - train.ema_alpha) * mean
            row.update({f"val_dice_{self.names[k]}": v for k, v in validation["dice"].items()})
            row.update({"val_mean_dice": validation["mean_dice"], "val_ema_cases_mean_dice": mean, "val_ema_dice": counters.ema,
                        "val_cases": len(validation["per_case"]), "val_kind": validation["kind"]})
            progress.note(f"epoch {counters.epoch}: val Dice ({validation['kind']}) " + ", ".join(f"{self.names[k]} {v:.3f}" for k, v in validation["dice"].items()))
            if counters.ema > counters.best_ema:
                counters.best_ema = counters.ema
                save_checkpoint(self.run_dir / BEST, self._payload(tracked, rng=None))  # inference-only: no optimizer state
        row["val_s"] = time.perf_counter() - start
        counters.elapsed_s += row["val_s"]
        return validation

    def _finish(self, logbook: Logbook, validation: dict[str, Any] | None, stopped_by_time: bool) -> None:
        logbook.plot()
        logbook.close()
        counters = self.counters
        write_json(self.run_dir / "summary.json", {
            "fold": self.config.train.fold, "configuration": self.configuration.name, "epochs": counters.epoch, "iterations": counters.iteration,
            "minutes": counters.elapsed_s / 60, "stopped_by_time": stopped_by_time, "best_ema_dice": counters.best_ema,
            "best_ema_cases": len(self.ema_ids), "validation": self.val_kind, "validation_cases": len(self.val_ids),
            "validation_predictions": VALIDATION_FOLDER if (self.run_dir / VALIDATION_FOLDER).is_dir() and self.val_kind != TRAINING_CASES else None,
            "final_validation": None if validation is None else {self.names[k]: v for k, v in validation["dice"].items()},
            "scored": "regions" if self.regions else "classes",
            "final_mean_dice": None if validation is None else validation["mean_dice"],
            "freeze_encoder_epochs": self.config.train.freeze_encoder_epochs,
            "init_from": read_report(self.run_dir),  # written when the run started (kept across --resume)
        })

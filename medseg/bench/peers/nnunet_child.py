"""The nnU-Net side of `medseg bench peer nnunet`, run in its own process through nnU-Net's Python API.

``python -m medseg.bench.peers.nnunet_child STAGE JOB.json`` with ``nnUNet_raw``, ``nnUNet_preprocessed`` and
``nnUNet_results`` set and the pinned nnunetv2 on the path (:mod:`medseg.bench.peers.install`); medseg itself never
imports this module. Stages, each writing ``job["results"]/<stage>.json``:

* ``prepare``: what ``nnUNetv2_plan_and_preprocess -d ID -c CONFIG --verify_dataset_integrity`` does (fingerprint,
  nnU-Net's own planner and preprocessor, its default process counts), then medseg's folds as ``splits_final.json``;
* ``train``: nnU-Net's trainer, unchanged but for its length (:class:`nnUNetTrainerWallClock`), with the thread
  settings of ``nnUNetv2_train``; it stops when the budget is spent and saves ``checkpoint_final.pth``;
* ``predict``: nnU-Net's predictor on the held-out cases with the final checkpoint, mirroring off and on, as
  ``nnUNetv2_predict`` does by default (step 0.5, Gaussian weighting, 3 preprocessing and 3 export processes),
  initialised by hand from the plans and the checkpoint, so no trainer class is looked up by name.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from medseg.bench.peers.install import NEVER_IMPORTED
from medseg.bench.peers.wall_clock import WallClockPolyLR

#: ``nnUNetv2_plan_and_preprocess``'s default ``-np`` per configuration.
PREPROCESS_PROCESSES = {"2d": 8, "3d_fullres": 4, "3d_lowres": 8}
#: ``nnUNetv2_predict``'s defaults (-npp, -nps, -step_size).
PREDICT_PROCESSES, TILE_STEP = 3, 0.5


class nnUNetTrainerWallClock(nnUNetTrainer):  # noqa: N801 (nnU-Net's naming)
    """nnU-Net's default trainer whose poly LR and length follow a wall-clock budget (``budget_s``, set before
    :meth:`run_training`). Everything else (plans, loss, augmentation, sampling, its per-epoch pseudo-validation)
    is nnU-Net's; the budget's clock starts after the data loaders are up, as medseg's does."""

    budget_s: float = 0.0

    def configure_optimizers(self):
        optimizer, _ = super().configure_optimizers()
        total = self.num_epochs * self.num_iterations_per_epoch
        self.schedule = WallClockPolyLR(optimizer, self.initial_lr, self.budget_s, total)
        self.step_seconds: list[float] = []
        return optimizer, self.schedule

    def _train_epoch(self) -> None:
        outputs = []
        for _ in range(self.num_iterations_per_epoch):
            self.schedule.step()
            started = time.perf_counter()
            outputs.append(self.train_step(next(self.dataloader_train)))
            self.step_seconds.append(time.perf_counter() - started)
            self.schedule.advance()
            if self.schedule.expired():
                break
        self.on_train_epoch_end(outputs)

    def _validate_epoch(self) -> None:
        with torch.no_grad():
            self.on_validation_epoch_start()
            outputs = []
            for _ in range(self.num_val_iterations_per_epoch):
                outputs.append(self.validation_step(next(self.dataloader_val)))
                if self.schedule.expired():
                    break
            self.on_validation_epoch_end(outputs)

    def run_training(self):
        self.on_train_start()
        self.schedule.start()
        while self.current_epoch < self.num_epochs:
            self.on_epoch_start()
            self.on_train_epoch_start()
            self._train_epoch()
            if self.schedule.expired():  # the budget ran out inside the epoch: no pseudo-validation of a part-epoch
                self.current_epoch += 1
                break
            self._validate_epoch()
            self.on_epoch_end()
            if self.schedule.expired():
                break
        self.train_seconds = self.schedule.elapsed_s()
        self.on_train_end()


def _threads(device: torch.device) -> None:
    """As nnUNetv2_train and nnUNetv2_predict set them."""
    if device.type == "cpu":
        torch.set_num_threads(multiprocessing.cpu_count())
    elif device.type == "cuda":
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
    if torch.cuda.is_available():  # nnUNetv2_train's run_training() sets these before training
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True


def _preprocessed(job: dict[str, Any]) -> Path:
    from nnunetv2.paths import nnUNet_preprocessed

    return Path(nnUNet_preprocessed) / job["dataset_name"]


def prepare(job: dict[str, Any]) -> dict[str, Any]:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess

    started = time.perf_counter()
    extract_fingerprints([job["dataset_id"]], check_dataset_integrity=True)
    plans_identifier = plan_experiments([job["dataset_id"]], job["planner"])
    configuration = job["configuration"]
    plans = load_json(str(_preprocessed(job) / f"{plans_identifier}.json"))
    if configuration not in plans["configurations"]:
        raise SystemExit(f"nnU-Net planned no {configuration} for this dataset (it has {', '.join(plans['configurations'])})")
    preprocess([job["dataset_id"]], plans_identifier, [configuration], [PREPROCESS_PROCESSES.get(configuration, 4)])
    shutil.copyfile(Path(job["raw_folder"]) / "splits_final.json", _preprocessed(job) / "splits_final.json")
    chosen = plans["configurations"][configuration]
    return {"plans_identifier": plans_identifier, "patch_size": chosen["patch_size"], "batch_size": chosen["batch_size"],
            "spacing": chosen["spacing"], "network": chosen["architecture"]["network_class_name"], "seconds": time.perf_counter() - started}


def train(job: dict[str, Any]) -> dict[str, Any]:
    device = torch.device(job["device"])
    _threads(device)
    plans = load_json(str(_preprocessed(job) / f"{job['plans_identifier']}.json"))
    plans["continue_training"] = False
    dataset_json = load_json(str(_preprocessed(job) / "dataset.json"))
    trainer = nnUNetTrainerWallClock(plans=plans, configuration=job["configuration"], fold=job["fold"], dataset_json=dataset_json, device=device)
    trainer.budget_s = job["minutes"] * 60
    train_cases, val_cases = trainer.do_split()
    trainer.run_training()
    steps = trainer.step_seconds
    return {"iterations": trainer.schedule.iterations, "epochs_started": trainer.current_epoch, "train_seconds": trainer.train_seconds,
            "step_s_median": statistics.median(steps) if steps else None, "final_lr": trainer.schedule.get_last_lr()[0],
            "batch_size": trainer.batch_size, "train_cases": sorted(train_cases), "val_cases": sorted(val_cases),
            "compiled": type(trainer.network).__name__ == "OptimizedModule", "output_folder": trainer.output_folder}


def _network(job: dict[str, Any]) -> tuple[Any, ...]:
    """The network built from the plans (as nnU-Net's own predictor does) with the final checkpoint's weights."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = Path(job["output_folder"])
    plans, dataset_json = load_json(str(folder.parent / "plans.json")), load_json(str(folder.parent / "dataset.json"))
    manager = PlansManager(plans)
    configuration = manager.get_configuration(job["configuration"])
    channels = determine_num_input_channels(manager, configuration, dataset_json)
    heads = manager.get_label_manager(dataset_json).num_segmentation_heads
    network = nnUNetTrainer.build_network_architecture(manager, configuration, channels, heads, enable_deep_supervision=False)
    checkpoint = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    network.load_state_dict(checkpoint["network_weights"])
    return network, manager, configuration, dataset_json, checkpoint


def predict(job: dict[str, Any]) -> dict[str, Any]:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    device = torch.device(job["device"])
    _threads(device)
    network, manager, configuration, dataset_json, checkpoint = _network(job)
    runs = {}
    for tta in job["tta"]:
        out = Path(job["predictions"][str(tta)])
        out.mkdir(parents=True, exist_ok=True)
        predictor = nnUNetPredictor(tile_step_size=TILE_STEP, use_gaussian=True, use_mirroring=tta, perform_everything_on_device=True,
                                    device=device, verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        predictor.manual_initialization(network, manager, configuration, [checkpoint["network_weights"]], dataset_json,
                                        checkpoint["trainer_name"], checkpoint["inference_allowed_mirroring_axes"])
        cases = job["cases"]
        started = time.perf_counter()
        predictor.predict_from_files([cases[case] for case in cases], [str(out / case) for case in cases], save_probabilities=False,
                                     overwrite=True, num_processes_preprocessing=PREDICT_PROCESSES,
                                     num_processes_segmentation_export=PREDICT_PROCESSES)
        runs[str(tta)] = {"seconds": time.perf_counter() - started, "cases": len(cases)}
    return {"runs": runs, "mirror_axes": checkpoint["inference_allowed_mirroring_axes"]}


STAGES = {"prepare": prepare, "train": train, "predict": predict}


def main(argv: list[str]) -> None:
    stage, job_path = argv
    job = json.loads(Path(job_path).read_text())
    result = STAGES[stage](job)
    result["versions"] = {name: version(name) for name in ("nnunetv2", "dynamic-network-architectures", "batchgeneratorsv2", "acvl-utils")}
    result["imported_but_never_needed"] = sorted({name.split(".")[0] for name in sys.modules if name.split(".")[0] in NEVER_IMPORTED})
    Path(job["results"], f"{stage}.json").write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])

"""`medseg bench peer nnunet DATA`: nnU-Net v2 and medseg on the same cases, fold, wall-clock budget and machine.

    medseg bench peer nnunet ../shared/data/msd_hippocampus --minutes 30 --fold 0 -o reports/peer_nnunet_cpu.md

writes the markdown table there and the JSON beside it (``.json``), in one run:

1. medseg's cache and folds (public API: ``prepare_cache``, ``fold_cases``, ``load_or_create_splits``); the same
   cases are written in nnU-Net's raw layout with medseg's folds as ``splits_final.json``
   (:mod:`medseg.bench.peers.nnunet_dataset`), so both tools hold out exactly the same cases;
2. medseg: ``medseg train DATA [-c CONFIG] --fold F --max-minutes M``, then ``medseg infer`` on the held-out images
   with ``--no-tta`` and ``--tta`` (its CLI, each in its own process, defaults otherwise);
3. nnU-Net (pinned, installed beside torch: :mod:`medseg.bench.peers.install`), in its own processes
   (:mod:`medseg.bench.peers.nnunet_child`): its own fingerprint, plans and preprocessing, its default trainer with
   only the poly LR on the wall clock (:mod:`medseg.bench.peers.wall_clock`), the final checkpoint, its predictor
   with mirroring off and on;
4. both tools' predictions scored by ``medseg.metrics.evaluate`` (the same metric code for both): Dice and HD95 per
   label, with iterations, seconds per iteration and inference seconds per case.

The tools run one after the other, each alone on the machine with the full budget: on 2 CPU cores, running both at
once would give each one core, which is neither tool's normal setting. Planning and preprocessing are outside the
budget (their seconds are listed); each budget's clock starts at its first training iteration and includes the
tool's own periodic validation. :func:`bench_peer_nnunet` with ``device="cuda"`` runs the same comparison on a GPU.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from medseg.bench.common import load_average, machine_info
from medseg.bench.peers.install import NNUNET_VERSION, ensure_nnunet
from medseg.bench.peers.nnunet_dataset import DATASET_ID, image_files, write_nnunet_raw
from medseg.bench.peers.report import render_markdown
from medseg.errors import ConfigError, MedsegError
from medseg.io.atomic import full_suffix, write_json, write_text

log = logging.getLogger(__name__)

MEDSEG_ROOT = Path(__file__).resolve().parents[3]  # the folder holding the medseg package, for the child processes
ORDER = "medseg first, then nnU-Net; one after the other, each alone on the machine with the full budget"


def _run(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
    """Run one step of the bench in its own process; its output goes to ``log_path``; a failure names the log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as handle:
        completed = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if completed.returncode != 0:
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-3:])
        raise MedsegError(f"{' '.join(command[:6])} ... failed (exit {completed.returncode}); see {log_path}: {tail[-400:]}")


def _medseg_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "medseg.cli.main", *arguments]


def _link_all(paths: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        link = folder / path.name
        if not link.is_symlink():
            link.symlink_to(path.resolve())
    return folder


def medseg_folds(dataset: Path, config_path: Path | None, overrides: list[str], fold: int):
    """medseg's config, cache, every fold's split and the description, through its public API (what `medseg train` uses)."""
    from medseg.config.loader import load_config
    from medseg.data.cache import cached_case_ids
    from medseg.data.dataset import load_dataset
    from medseg.train.api import prepare_cache
    from medseg.train.splits import fold_cases

    config = load_config(config_path, overrides)
    config.dataset, config.train.fold = str(dataset), fold
    if fold >= config.train.num_folds:
        raise ConfigError(f"--fold {fold} but medseg makes {config.train.num_folds} folds (0 to {config.train.num_folds - 1}; train.num_folds)")
    cache = prepare_cache(dataset, config, progress=False)
    ids = cached_case_ids(cache)
    splits = []
    for number in range(config.train.num_folds):  # the trainer's own call for each fold (grouped folds included)
        train_ids, val_ids, _ = fold_cases(cache, ids, config.train.model_copy(update={"fold": number}))
        splits.append({"train": sorted(train_ids), "val": sorted(val_ids)})
    return config, cache, splits, load_dataset(dataset)


def run_medseg(dataset: Path, config_path: Path | None, overrides: list[str], fold: int, minutes: float, device: str,
               held_out: Path, work: Path, tta: list[bool]) -> dict[str, Any]:  # fmt: skip
    """`medseg train` for the budget, then `medseg infer` per TTA setting; predictions under ``work/predictions_*``."""
    from medseg.train.checkpoint import load_checkpoint

    run = work / "medseg_run"
    command = ["train", str(dataset), "--fold", str(fold), "--max-minutes", str(minutes), "-o", str(run), *(["-c", str(config_path)] if config_path else [])]
    for item in [f"train.device={device}", *overrides]:
        command += ["--set", item]
    started = time.perf_counter()
    _run(_medseg_command(*command), work / "logs" / "medseg_train.log")
    fold_dir = run / f"fold_{fold}"
    summary = json.loads((fold_dir / "summary.json").read_text())
    payload = load_checkpoint(fold_dir / "checkpoint_last.pt")
    chosen = payload.config.get("train", {})
    with open(fold_dir / "training_log.csv", newline="") as handle:
        epochs = list(csv.DictReader(handle))
    row = {"command": "medseg " + " ".join(command), "iterations": summary["iterations"],
           # the budget's clock at the end of the last epoch: its final validation on every case runs after the budget
           "train_seconds": float(epochs[-1]["minutes"]) * 60, "step_s_median": statistics.median(float(epoch["step_s"]) for epoch in epochs),
           "train_wall_seconds": time.perf_counter() - started, "configuration": summary["configuration"],
           "patch_size": chosen.get("patch_size") or payload.configuration.patch_size,
           "batch_size": chosen.get("batch_size") or payload.configuration.batch_size, "val_cases": sorted(payload.val_cases), "infer": {}}
    for flag in tta:
        out = work / f"predictions_medseg_tta_{'on' if flag else 'off'}"
        _run(_medseg_command("infer", str(fold_dir), str(held_out), "-o", str(out), "--tta" if flag else "--no-tta", "--device", device),
             work / "logs" / f"medseg_infer_tta_{'on' if flag else 'off'}.log")
        written = json.loads((out / "infer_summary.json").read_text())
        row["infer"][str(flag)] = {"seconds": written["seconds"], "cases": len(written["written"]), "predictions": str(out)}
    return row


def _nnunet_env(site: Path | None, work: Path) -> dict[str, str]:
    folders = {name: work / "nnunet" / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(str(entry) for entry in (site, MEDSEG_ROOT, os.environ.get("PYTHONPATH")) if entry)
    return {**os.environ, **{name: str(folder) for name, folder in folders.items()}, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def _child(stage: str, job: dict[str, Any], env: dict[str, str], work: Path) -> dict[str, Any]:
    job_path = work / "nnunet" / f"{stage}_job.json"
    write_json(job_path, job)
    _run([sys.executable, "-m", "medseg.bench.peers.nnunet_child", stage, str(job_path)], work / "logs" / f"nnunet_{stage}.log", env)
    return json.loads((Path(job["results"]) / f"{stage}.json").read_text())


def run_nnunet(description, splits: list[dict], fold: int, minutes: float, device: str, site: Path | None, work: Path,
               tta: list[bool], planner: str, configuration: str) -> dict[str, Any]:  # fmt: skip
    """nnU-Net's prepare, train and predict stages, each in its own process."""
    env = _nnunet_env(site, work)
    raw = write_nnunet_raw(description, splits, env["nnUNet_raw"])
    job: dict[str, Any] = {"dataset_id": DATASET_ID, "dataset_name": raw.name, "raw_folder": str(raw), "planner": planner,
                           "configuration": configuration, "fold": fold, "minutes": minutes, "device": device, "results": str(work / "nnunet")}
    prepared = _child("prepare", job, env, work)
    job["plans_identifier"] = prepared["plans_identifier"]
    started = time.perf_counter()
    trained = _child("train", job, env, work)
    wall = time.perf_counter() - started
    if trained["val_cases"] != sorted(splits[fold]["val"]):
        differ = len(set(trained["val_cases"]) ^ set(splits[fold]["val"]))
        raise MedsegError(f"nnU-Net held out other cases than medseg's fold {fold} ({differ} differ); see {raw / 'splits_final.json'}")
    ending = json.loads((raw / "dataset.json").read_text())["file_ending"]
    cases = {case: image_files(raw, case, description.num_channels, ending) for case in sorted(splits[fold]["val"])}
    predictions = {str(flag): str(work / f"predictions_nnunet_tta_{'on' if flag else 'off'}") for flag in tta}
    predicted = _child("predict", {**job, "output_folder": trained["output_folder"], "tta": tta, "cases": cases, "predictions": predictions}, env, work)
    infer = {key: {**value, "predictions": predictions[key]} for key, value in predicted["runs"].items()}
    return {"prepare": prepared, "iterations": trained["iterations"], "train_seconds": trained["train_seconds"], "train_wall_seconds": wall,
            "configuration": configuration, "patch_size": prepared["patch_size"], "batch_size": trained["batch_size"],
            "step_s_median": trained["step_s_median"], "final_lr": trained["final_lr"], "compiled": trained["compiled"], "val_cases": trained["val_cases"],
            "versions": predicted["versions"],
            "imported_but_never_needed": sorted({*prepared["imported_but_never_needed"], *trained["imported_but_never_needed"], *predicted["imported_but_never_needed"]}),
            "infer": infer}


def score(predictions: str | Path, labels: Path, dataset: Path) -> dict[str, dict[str, float]]:
    """Mean Dice and HD95 per label by medseg's evaluation (the same code for both tools)."""
    from medseg.metrics.evaluate import evaluate

    result = evaluate(Path(predictions), labels, labels=dataset / "dataset.json", progress=False)
    return {"dice": result.mean("dice"), "hd95": result.mean("hd95"), "cases": result.summary["cases"]}


def _held_out(description, val_ids: list[str], work: Path) -> tuple[Path, Path]:
    """Folders of links to the held-out images (what `medseg infer` reads) and labels (the references)."""
    cases = [description.case(case) for case in val_ids]
    images = _link_all([image for case in cases for image in case.images], work / "held_out" / "images")
    labels = work / "held_out" / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    for case in cases:
        link = labels / f"{case.case_id}{full_suffix(case.label)}"
        if not link.is_symlink():
            link.symlink_to(case.label.resolve())
    return images, labels


def _rows(tool: str, side: dict[str, Any], labels: Path, dataset: Path) -> list[dict[str, Any]]:
    rows = []
    for key, run in side["infer"].items():
        scores = score(run["predictions"], labels, dataset)
        rows.append({"tool": tool, "tta": key == "True", **scores, "iterations": side["iterations"],
                     "s_per_iteration": side["train_seconds"] / max(side["iterations"], 1), "infer_s_per_case": run["seconds"] / max(run["cases"], 1)})
    return rows


def _write(out: Path, result: dict[str, Any]) -> None:
    write_json(out.with_suffix(".json"), result)
    write_text(out.with_suffix(".md"), render_markdown(result))


def bench_peer_nnunet(dataset: str | Path, out: str | Path, minutes: float = 30.0, fold: int = 0, config: str | Path | None = None,
                      overrides: list[str] | None = None, device: str = "cpu", work_dir: str | Path | None = None,
                      peers_dir: str | Path | None = None, install: bool = True, tta: tuple[bool, ...] = (False, True),
                      planner: str = "ExperimentPlanner", configuration: str = "3d_fullres") -> dict[str, Any]:  # fmt: skip
    """Train, predict and score medseg then nnU-Net on ``dataset``'s fold ``fold`` with ``minutes`` each on ``device``
    ("cpu" or "cuda"); write ``out`` as markdown (``.md``) and JSON (``.json``); return the result."""
    if fold == "all" or not isinstance(fold, int):
        raise ConfigError("bench peer nnunet needs a held-out fold number (0, 1, ...), not 'all'")
    dataset, out, tta = Path(dataset), Path(out), list(tta)
    site = ensure_nnunet(peers_dir, install)  # before any long step: a missing nnU-Net fails in seconds
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "dataset": str(dataset), "fold": fold, "minutes": minutes,
                              "device": device, "config": str(config) if config else None, "overrides": list(overrides or []), "order": ORDER,
                              "nnunet": {"version": NNUNET_VERSION, "planner": planner, "configuration": configuration}, "machine": machine_info(),
                              "load_average_before": load_average(), "rows": []}
    with tempfile.TemporaryDirectory(prefix="medseg_peer_nnunet_") as temporary:
        work = Path(work_dir or temporary).resolve()
        medseg_overrides = [f"work_dir={work / 'medseg_cache'}", *(overrides or [])]  # the user's --set work_dir wins
        _, _, splits, description = medseg_folds(dataset, Path(config) if config else None, medseg_overrides, fold)
        images, labels = _held_out(description, splits[fold]["val"], work)
        result["held_out_cases"] = len(splits[fold]["val"])
        log.info("bench peer nnunet: medseg, %.1f minutes on %s", minutes, device)
        result["medseg"] = run_medseg(dataset, Path(config) if config else None, medseg_overrides, fold, minutes, device, images, work, tta)
        if result["medseg"]["val_cases"] != sorted(splits[fold]["val"]):
            raise MedsegError(f"medseg trained fold {fold} on another split than {work / 'medseg_cache'} holds")
        result["rows"] += _rows("medseg", result["medseg"], labels, dataset)
        _write(out, result)
        log.info("bench peer nnunet: nnU-Net %s, %.1f minutes on %s", NNUNET_VERSION, minutes, device)
        result["nnunet"].update(run_nnunet(description, splits, fold, minutes, device, site, work, tta, planner, configuration))
        result["rows"] += _rows("nnU-Net", result["nnunet"], labels, dataset)
        result["machine"]["packages"].update(result["nnunet"]["versions"])
        result["load_average_after"] = load_average()
        _write(out, result)
    return result

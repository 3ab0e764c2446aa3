"""`medseg bench gpu`: the one benchmark a lent CUDA GPU runs (about 8 minutes), prepared so that the
first session with a GPU needs nothing but this command.

Stages (each recorded on its own; one failing does not stop the others):

* ``tests``: the ``gpu`` pytest marker (CUDA-only tests), when the tests folder is there;
* ``resume``: a short CUDA training killed with SIGKILL after its first resume checkpoint and resumed;
  its weights are compared with an uninterrupted run's (deterministic kernels, as the CPU test);
* ``ddp``: a world-size-1 NCCL DistributedDataParallel run through ``torchrun``;
* ``throughput``: iterations/s, sampled GPU utilisation and the loader-wait share, for the hippocampus
  plan and a CT-like 128^3 plan on synthetic data;
* ``accuracy``: ``minutes`` of training on msd_hippocampus (folds 1-4), fold-0 validation Dice;
* ``inference``: seconds per 512x512x300 CT, cold (first case) and warm, per stage, TTA off and on,
  for a 3 mm (TotalSegmentator-fast-like) and a 1.5 mm network.

``dry_run`` runs every stage tiny and on the CPU, so the benchmark itself is tested without a GPU.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from medseg.bench.common import machine_info
from medseg.errors import MedsegError
from medseg.io.atomic import write_json, write_text

log = logging.getLogger(__name__)

STAGES = ("tests", "resume", "ddp", "throughput", "accuracy", "inference")
REPO = Path(__file__).resolve().parents[2]


class UtilizationSampler:
    """GPU busy percentage sampled every ``period`` seconds (NVML through torch, else nvidia-smi)."""

    def __init__(self, device: torch.device, period: float = 0.25):
        self.device, self.period, self.samples = device, period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> float | None:
        try:
            return float(torch.cuda.utilization(self.device))
        except Exception:  # no pynvml: ask nvidia-smi
            try:
                index = self.device.index or 0
                text = subprocess.run(["nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                      capture_output=True, text=True, timeout=5).stdout
                return float(text.strip().splitlines()[0])
            except Exception:
                return None

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._read()
            if value is not None:
                self.samples.append(value)
            self._stop.wait(self.period)

    def __enter__(self) -> UtilizationSampler:
        if self.device.type == "cuda":
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


# --- shared pieces ---------------------------------------------------------------------------------
def _synthetic(root: Path, cases: int, fov: tuple[float, float, float], seed: int = 1) -> Path:
    from medseg.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(root, cases=cases, seed=seed, fov_mm=fov)


def _config(overrides: list[str]):
    from medseg.config.loader import load_config

    return load_config(None, overrides)


def _tiny_training(device: str, dry_run: bool, work: Path) -> list[str]:
    size = "[32,32,16]" if dry_run else "[64,64,32]"
    return [f"train.device={device}", f"train.patch_size={size}", "train.batch_size=2", "train.epochs=4", "train.iterations_per_epoch=5",
            "train.val_every=100", "train.checkpoint_every=1", "train.num_folds=2", "train.tensorboard=false", "train.deterministic=true",
            "model.base_features=8", "model.max_features=32", "plan.target_spacing=[3.0,3.0,4.0]", f"work_dir={work}", "preprocess.workers=2"]


def _prepare(dataset: Path, overrides: list[str]) -> tuple[Any, Path]:
    from medseg.train.api import prepare_cache

    config = _config(overrides)
    config.dataset = str(dataset)
    return config, prepare_cache(dataset, config, progress=False)


# --- stages --------------------------------------------------------------------------------------
def stage_tests(dry_run: bool, **_: Any) -> dict[str, Any]:
    tests = REPO / "tests"
    if not tests.is_dir():
        return {"status": "skipped", "reason": "no tests folder next to this medseg (a wheel install)"}
    completed = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", str(tests)],
                               cwd=REPO, capture_output=True, text=True, timeout=600)
    summary = (completed.stdout.strip().splitlines() or ["(no output)"])[-1]
    ok = completed.returncode in (0, 5)  # 5: nothing collected
    return {"status": "ok" if ok else "failed", "summary": summary, "tail": completed.stdout[-2000:] if not ok else ""}


def _train_script(cache: Path, run_dir: Path, overrides: list[str], resume: bool) -> str:
    return ("from medseg.config.loader import load_config\nfrom medseg.train.trainer import Trainer\n"
            f"Trainer(load_config(None, {overrides!r}), {str(cache)!r}, {str(run_dir)!r}, resume={resume!r}, progress=False).fit()\n")


def stage_resume(device: str, dry_run: bool, work: Path, **_: Any) -> dict[str, Any]:
    """SIGKILL after the first resume checkpoint, resume, and compare with an uninterrupted run."""
    from medseg.train.checkpoint import load_checkpoint
    from medseg.train.trainer import Trainer

    dataset = _synthetic(work / "resume_data", 4, (120.0, 120.0, 72.0))
    overrides = _tiny_training(device, dry_run, work / "resume_work")
    config, cache = _prepare(dataset, overrides)
    reference = Trainer(config, cache, work / "reference", progress=False)
    reference.fit()
    killed = work / "killed"
    child = subprocess.Popen([sys.executable, "-c", _train_script(cache, killed, overrides, False)], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    checkpoint, deadline = killed / "checkpoint_last.pt", time.time() + 300
    while not checkpoint.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    if child.returncode != -signal.SIGKILL:
        return {"status": "failed", "reason": f"the run ended (code {child.returncode}) before it could be killed mid-training"}
    killed_at = load_checkpoint(checkpoint).epoch
    resumed = Trainer(_config(overrides), cache, killed, resume=True, progress=False)
    resumed.fit()
    difference = max(float((a - b).abs().max()) for a, b in zip(reference.step.network.state_dict().values(),
                                                                   resumed.step.network.state_dict().values()) if a.is_floating_point())
    return {"status": "ok" if difference == 0.0 else "failed", "killed_after_epoch": killed_at, "epochs": resumed.counters.epoch,
            "max_weight_difference": difference}


def stage_ddp(device: str, dry_run: bool, work: Path, **_: Any) -> dict[str, Any]:
    """torchrun with one process that joins a process group (NCCL on CUDA) and trains through DDP."""
    from medseg.train.checkpoint import load_checkpoint

    dataset = _synthetic(work / "ddp_data", 4, (120.0, 120.0, 72.0), seed=2)
    overrides = _tiny_training(device, dry_run, work / "ddp_work") + ["train.epochs=2"]
    _, cache = _prepare(dataset, overrides)
    script = work / "ddp_train.py"
    write_text(script, _train_script(cache, work / "ddp_run", overrides, False))
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(script)],
                               cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "MEDSEG_FORCE_DDP": "1"}, capture_output=True, text=True, timeout=600)
    if completed.returncode != 0:
        return {"status": "failed", "tail": completed.stderr[-2000:]}
    payload = load_checkpoint(work / "ddp_run" / "checkpoint_last.pt")
    backend = "nccl" if device == "cuda" else "gloo"
    clean = not any(key.startswith("module.") for key in payload.model)
    return {"status": "ok" if clean and payload.training.rng else "failed", "backend": backend, "seconds": round(time.perf_counter() - started, 1),
            "iterations": payload.training.iteration, "ranks_with_rng_state": sorted(payload.training.rng)}


def _throughput(name: str, dataset: Path, overrides: list[str], iterations: int, work: Path) -> dict[str, Any]:
    from medseg.bench.train import bench_train

    config, cache = _prepare(dataset, overrides)
    device = torch.device("cuda") if config.train.device != "cpu" and torch.cuda.is_available() else torch.device("cpu")
    with UtilizationSampler(device) as sampler:
        result = bench_train(config, cache, iterations=iterations, warmup=3, run_dir=work / f"bench_{name}")
    return {"plan": name, "patch_size": result["patch_size"], "batch_size": result["batch_size"], "parameters": result["parameters"],
            "steps_per_s": round(result["steps_per_s"], 2), "step_s_median": round(result["step_s_median"], 4),
            "loader_wait_share": round(result["loader_wait_share"], 3), "loader_workers": result["num_workers"],
            "gpu_utilization_pct": sampler.mean, "peak_gpu_memory_gb": result["peak_gpu_memory_gb"]}


def stage_throughput(device: str, dry_run: bool, work: Path, hippocampus: Path | None, **_: Any) -> dict[str, Any]:
    iterations = 3 if dry_run else 60
    rows = []
    if hippocampus is not None:
        rows.append(_throughput("hippocampus", hippocampus, [f"train.device={device}", f"work_dir={work / 'hippo_work'}", "preprocess.workers=8",
                                                             *(["train.batch_size=2", "model.base_features=4"] if dry_run else [])], iterations, work))
    ct = _synthetic(work / "ct_data", 3 if dry_run else 6, (64.0, 64.0, 64.0) if dry_run else (220.0, 220.0, 200.0), seed=4)
    patch = "[32,32,32]" if dry_run else "[128,128,128]"
    rows.append(_throughput("ct_128", ct, [f"train.device={device}", "plan.target_spacing=[1.5,1.5,1.5]", f"train.patch_size={patch}", "train.fold=all",
                                           f"work_dir={work / 'ct_work'}", "preprocess.workers=8", *(["model.base_features=4"] if dry_run else [])],
                            iterations, work))
    return {"status": "ok", "rows": rows}


def stage_accuracy(device: str, dry_run: bool, work: Path, hippocampus: Path | None, minutes: float, **_: Any) -> dict[str, Any]:
    from medseg.config.loader import load_config
    from medseg.data.recipes import packaged_folder
    from medseg.train.api import train

    if hippocampus is None:
        return {"status": "skipped", "reason": "msd_hippocampus not found (give --data)"}
    overrides = [f"train.device={device}", f"work_dir={work / 'hippo_work'}", f"run_dir={work / 'hippo_run'}", "preprocess.workers=8"]
    if dry_run:
        overrides += ["train.max_minutes=0.05", "train.val_max_cases=2", "model.base_features=4", "train.batch_size=2"]
    else:
        overrides += [f"train.max_minutes={minutes}"]
    config = load_config(packaged_folder("medseg.configs") / "hippocampus_gpu.yaml", overrides)
    config.dataset = str(hippocampus)
    started = time.perf_counter()
    (result,) = train(config, [0], progress=False)
    validation = result.last_validation or {}
    return {"status": "ok", "minutes_budget": config.train.max_minutes, "wall_minutes": round((time.perf_counter() - started) / 60, 2),
            "iterations": result.iterations_done, "epochs": result.epochs_done,
            "fold0_dice": {str(k): round(v, 4) for k, v in validation.get("dice", {}).items()}, "validation": validation.get("kind")}


def _infer_once(model: Path, ct: Path, out: Path, device: str, tta: bool) -> dict[str, Any]:
    from medseg.infer import InferConfig, Segmenter, infer

    started = time.perf_counter()
    segmenter = Segmenter(model, InferConfig(device=device, tta=tta, compile="off"))
    load_s = time.perf_counter() - started
    rows = []
    for index, name in enumerate(("cold", "warm")):
        case_out = out / f"{name}_{'tta' if tta else 'plain'}"
        started = time.perf_counter()
        infer(segmenter.model, ct, case_out, segmenter.config, segmenter=segmenter)
        seconds = time.perf_counter() - started
        sidecar = json.loads((case_out / f"{ct.name.split('.')[0]}.json").read_text())
        rows.append({"run": name, "tta": tta, "seconds": round(seconds + (load_s if index == 0 else 0.0), 2),
                     "stages_s": sidecar.get("runtime_s", {})})
    return {"rows": rows}


def stage_inference(device: str, dry_run: bool, work: Path, **_: Any) -> dict[str, Any]:
    from medseg.bench.infer import build_benchmark_checkpoint, synthetic_ct

    shape = (48, 48, 24) if dry_run else (512, 512, 300)
    ct = synthetic_ct(work / "ct.nii.gz", shape)
    models = {"3mm_96": build_benchmark_checkpoint(work / "model_3mm.pt", classes=3, base_features=4 if dry_run else 16,
                                                   patch=(32, 32, 32) if dry_run else (96, 96, 96))}
    if not dry_run:  # the full-resolution network only where it is worth timing
        models["1.5mm_128"] = build_benchmark_checkpoint(work / "model_15mm.pt", classes=3, base_features=32, max_features=320,
                                                         patch=(128, 128, 128), spacing=(1.5, 1.5, 1.5))
    rows = []
    for name, model in models.items():
        for tta in (False, True):
            for row in _infer_once(model, ct, work / f"infer_{name}", device, tta)["rows"]:
                rows.append({"model": name, **row})
    return {"status": "ok", "ct_shape": list(shape), "rows": rows}


STAGE_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "tests": stage_tests, "resume": stage_resume, "ddp": stage_ddp, "throughput": stage_throughput,
    "accuracy": stage_accuracy, "inference": stage_inference,
}


# --- report --------------------------------------------------------------------------------------
def render_markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    gpu = machine.get("gpu") or {}
    lines = [f"# medseg bench gpu ({result['date']}{', dry run on the CPU' if result['dry_run'] else ''})", "",
             f"GPU: {gpu.get('name', 'none')} ({gpu.get('memory_gb', '-')} GB, CUDA {gpu.get('cuda', '-')}, cuDNN {gpu.get('cudnn', '-')}); "
             f"CPU: {machine['cpu']}, {machine['cores']} cores; packages: "
             + ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v), "", "| stage | status | result |", "|---|---|---|"]
    for name, stage in result["stages"].items():
        details = {k: v for k, v in stage.items() if k not in ("status", "rows", "tail", "error")}
        lines.append(f"| {name} | {stage['status']} | {json.dumps(details)[:300] if details else ''}{stage.get('error', '')} |")
    throughput = result["stages"].get("throughput", {}).get("rows", [])
    if throughput:
        lines += ["", "| plan | patch x batch | steps/s | s/step (median) | loader wait | GPU busy % | peak GPU GB |", "|---|---|---|---|---|---|---|"]
        for row in throughput:
            lines.append(f"| {row['plan']} | {row['patch_size']} x {row['batch_size']} | {row['steps_per_s']} | {row['step_s_median']} | "
                         f"{row['loader_wait_share']:.0%} | {row['gpu_utilization_pct'] if row['gpu_utilization_pct'] is not None else '-'} | "
                         f"{row['peak_gpu_memory_gb'] if row['peak_gpu_memory_gb'] is not None else '-'} |")
    inference = result["stages"].get("inference", {}).get("rows", [])
    if inference:
        lines += ["", "| model | TTA | run | seconds (read to mask written) | stages (s) |", "|---|---|---|---|---|"]
        for row in inference:
            stages = ", ".join(f"{k} {v}" for k, v in row["stages_s"].items())
            lines.append(f"| {row['model']} | {'on' if row['tta'] else 'off'} | {row['run']} | {row['seconds']} | {stages} |")
    return "\n".join(lines) + "\n"


def bench_gpu(out: str | Path, data_dir: str | Path | None = None, dry_run: bool = False, minutes: float = 5.0,
              skip: list[str] | None = None, work_dir: str | Path | None = None) -> dict[str, Any]:
    """Run every stage not in ``skip``; write ``out`` (JSON) and the markdown beside it."""
    skip = list(skip or [])
    unknown = [name for name in skip if name not in STAGES]
    if unknown:
        raise MedsegError(f"bench gpu: --skip {', '.join(unknown)} is not a stage; the stages are {', '.join(STAGES)}")
    if not dry_run and not torch.cuda.is_available():
        raise MedsegError("bench gpu needs a CUDA GPU and this machine has none visible; `medseg bench gpu --dry-run` checks the benchmark on the CPU")
    device = "cpu" if dry_run else "cuda"
    data = Path(data_dir or os.environ.get("MEDSEG_TEST_DATA", "../shared/data"))
    hippocampus = data / "msd_hippocampus" if (data / "msd_hippocampus" / "dataset.json").is_file() else None
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "dry_run": dry_run, "machine": machine_info(), "stages": {}}
    with tempfile.TemporaryDirectory(prefix="medseg_bench_gpu_") as temporary:
        work = Path(work_dir or temporary)
        for name in STAGES:
            if name in skip:
                continue
            started = time.perf_counter()
            log.info("bench gpu: %s", name)
            (work / name).mkdir(parents=True, exist_ok=True)
            try:
                stage = STAGE_FUNCTIONS[name](device=device, dry_run=dry_run, work=work / name, hippocampus=hippocampus, minutes=minutes)
            except Exception as error:  # one broken stage must not hide the others' numbers
                stage = {"status": "error", "error": f"{type(error).__name__}: {str(error)[:500]}"}
            stage["seconds"] = round(time.perf_counter() - started, 1)
            result["stages"][name] = stage
            if work_dir is None:  # the temporary folder goes anyway; free its disk stage by stage
                shutil.rmtree(work / name, ignore_errors=True)
    out = Path(out)
    write_json(out, result)
    result["table"] = write_text(out.with_suffix(".md"), render_markdown(result)).read_text()
    return result

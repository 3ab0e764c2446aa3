"""`medseg bench gpu`: the one benchmark a lent CUDA GPU runs (about 8 minutes), prepared so that a
session with a GPU needs nothing but this command.

Stages (each recorded on its own and written out as soon as it ends; one failing does not stop the others):

* ``accuracy``: ``minutes`` of training on msd_hippocampus (folds 1-4), fold-0 validation Dice on every
  held-out case. Started first, in its own process, so that it trains beside the three short
  correctness stages, whose timings do not matter;
* ``tests``: the ``gpu`` pytest marker (the test files that hold gpu-marked tests), when the tests folder is there;
* ``resume``: a short CUDA training killed with SIGKILL after its first resume checkpoint and resumed;
  its weights are compared with an uninterrupted run's (deterministic kernels, as the CPU test);
* ``ddp``: a world-size-1 NCCL DistributedDataParallel run through ``torchrun``;
* then, with the GPU to themselves, the timed stages: ``throughput`` (iterations/s, GPU utilisation sampled
  over the timed steps, loader-wait share and peak memory, for the hippocampus plan and a CT-like 128^3
  plan; with ``step_options`` each training-step option alone) and ``inference`` (seconds per 512x512x300
  CT, cold and warm, per stage, TTA off and on, for a 3 mm and a 1.5 mm network).

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
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from medseg.bench.common import machine_info
from medseg.errors import MedsegError
from medseg.io.atomic import write_json, write_text

log = logging.getLogger(__name__)

STAGES = ("tests", "resume", "resume_compiled", "ddp", "accuracy", "throughput", "inference")
ACCURACY_GRACE_S = 600  # beyond its training minutes: preprocessing, the final validation on every case, a slow start
REPO = Path(__file__).resolve().parents[2]


# --- shared pieces ---------------------------------------------------------------------------------
def _synthetic(root: Path, cases: int, fov: tuple[float, float, float], seed: int = 1) -> Path:
    from medseg.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(root, cases=cases, seed=seed, fov_mm=fov)


def _config(overrides: list[str]):
    from medseg.config.loader import load_config

    return load_config(None, overrides)


def _tiny_training(device: str, dry_run: bool, work: Path, compile_mode: str = "off") -> list[str]:
    size = "[32,32,16]" if dry_run else "[64,64,32]"
    return [f"train.device={device}", f"train.patch_size={size}", "train.batch_size=2", "train.epochs=4", "train.iterations_per_epoch=5",
            "train.val_every=100", "train.checkpoint_every=1", "train.num_folds=2", "train.tensorboard=false", "train.deterministic=true",
            f"train.compile={compile_mode}",  # off: checkpoint, RNG and NCCL logic do not depend on it (stage resume_compiled checks it on)
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
    # Only the files that hold gpu-marked tests are collected: a GPU machine may lack what the
    # other test modules import (SimpleITK, highdicom, the JPEG plugins), which has nothing to do with CUDA.
    files = sorted(str(path) for path in tests.rglob("test_*.py") if "pytest.mark.gpu" in path.read_text(encoding="utf-8"))
    if not files:
        return {"status": "skipped", "reason": "no gpu-marked tests found"}
    completed = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files],
                               cwd=REPO, capture_output=True, text=True, timeout=600)
    summary = (completed.stdout.strip().splitlines() or ["(no output)"])[-1]
    ok = completed.returncode in (0, 5)  # 5: nothing collected
    return {"status": "ok" if ok else "failed", "summary": summary, "tail": completed.stdout[-2000:] if not ok else ""}


def _child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child Python: this medseg first, the caller's PYTHONPATH kept
    (a GPU machine may hold carried packages there)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def _train_script(cache: Path, run_dir: Path, overrides: list[str], resume: bool) -> str:
    return ("from medseg.config.loader import load_config\nfrom medseg.train.trainer import Trainer\n"
            f"Trainer(load_config(None, {overrides!r}), {str(cache)!r}, {str(run_dir)!r}, resume={resume!r}, progress=False).fit()\n")


def stage_resume(device: str, dry_run: bool, work: Path, compile_mode: str = "off", **_: Any) -> dict[str, Any]:
    """SIGKILL after the first resume checkpoint, resume, and compare with an uninterrupted run."""
    from medseg.train.checkpoint import load_checkpoint
    from medseg.train.trainer import Trainer

    dataset = _synthetic(work / "resume_data", 4, (120.0, 120.0, 72.0))
    overrides = _tiny_training(device, dry_run, work / "resume_work", compile_mode)
    config, cache = _prepare(dataset, overrides)
    reference = Trainer(config, cache, work / "reference", progress=False)
    reference.fit()
    killed = work / "killed"
    child = subprocess.Popen([sys.executable, "-c", _train_script(cache, killed, overrides, False)], cwd=REPO,
                             env=_child_env())
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


def stage_resume_compiled(device: str, dry_run: bool, work: Path, **_: Any) -> dict[str, Any]:
    """The same kill-and-resume with torch.compile on, as CUDA training runs by default."""
    if dry_run:  # inductor on a CPU compiles three runs for minutes; the dry run checks the stage's plumbing only
        return {"status": "skipped", "reason": "compiled resume runs on CUDA only (the dry run would compile for minutes on a CPU)"}
    return stage_resume(device, dry_run, work, compile_mode="on")


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
                               cwd=REPO, env=_child_env(MEDSEG_FORCE_DDP="1"), capture_output=True, text=True, timeout=600)
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
    # Each row compiles from scratch, as in a user's own process. Without this the second plan's forward (the same
    # DynUNet code) is a dynamo *recompile* with symbolic shapes, which the second H200 run showed (slow, and not
    # what training runs).
    torch.compiler.reset()
    started = time.perf_counter()
    result = bench_train(config, cache, iterations=iterations, warmup=3, run_dir=work / f"bench_{name}")
    utilization = result["gpu_utilization_pct_mean"]
    return {"plan": name, "patch_size": result["patch_size"], "batch_size": result["batch_size"], "parameters": result["parameters"],
            "steps_per_s": round(result["steps_per_s"], 2), "step_s_median": round(result["step_s_median"], 4),
            "loader_wait_share": round(result["loader_wait_share"], 3), "loader_workers": result["num_workers"],
            "gpu_utilization_pct": None if utilization is None else round(utilization, 1),
            "peak_gpu_memory_gb": None if result["peak_gpu_memory_gb"] is None else round(result["peak_gpu_memory_gb"], 2),
            "options": result["options"], "wall_s": round(time.perf_counter() - started, 1)}


#: Training-step options timed one at a time against the defaults (bf16, compiled, fused optimizer on
#: CUDA) on the CT-like plan: the defaults are on because such a table showed they pay.
OPTION_VARIANTS: dict[str, list[str]] = {
    "amp off (fp32)": ["train.amp=off"],
    "channels_last_3d": ["train.channels_last=true"],
    "foreach optimizer (fused off)": ["train.fused_optimizer=off"],
    "eager (compile off)": ["train.compile=off"],
}


def stage_throughput(device: str, dry_run: bool, work: Path, hippocampus: Path | None, shared: Path, step_options: bool = False,
                     **_: Any) -> dict[str, Any]:
    rows = []
    if hippocampus is not None:
        rows.append(_throughput("hippocampus", hippocampus, [f"train.device={device}", f"work_dir={shared / 'hippocampus'}", "preprocess.workers=8",
                                                             *(["train.batch_size=2", "model.base_features=4"] if dry_run else [])], 3 if dry_run else 300, work))
    ct = _synthetic(work / "ct_data", 3 if dry_run else 6, (64.0, 64.0, 64.0) if dry_run else (220.0, 220.0, 200.0), seed=4)
    patch = "[32,32,32]" if dry_run else "[128,128,128]"
    ct_overrides = [f"train.device={device}", "plan.target_spacing=[1.5,1.5,1.5]", f"train.patch_size={patch}", "train.fold=all",
                    f"work_dir={work / 'ct_work'}", "preprocess.workers=8", *(["model.base_features=4"] if dry_run else [])]
    rows.append(_throughput("ct_128", ct, ct_overrides, 3 if dry_run else 60, work))
    options = []
    for name, extra in OPTION_VARIANTS.items() if step_options else ():
        try:
            row = _throughput("ct_128", ct, ct_overrides + extra, 3 if dry_run else 20, work)
            options.append({"variant": name, "step_s_median": row["step_s_median"], "steps_per_s": row["steps_per_s"],
                            "peak_gpu_memory_gb": row["peak_gpu_memory_gb"], "wall_s": row["wall_s"],
                            "speedup_vs_default": round(rows[-1]["step_s_median"] / row["step_s_median"], 3)})
        except Exception as error:  # one failing option must not hide the others
            options.append({"variant": name, "error": f"{type(error).__name__}: {str(error)[:300]}"})
    return {"status": "ok", "rows": rows, "options": options}


def accuracy_run(device: str, dry_run: bool, run_dir: str, cache_dir: str, hippocampus: str, minutes: float) -> dict[str, Any]:
    """``minutes`` of training on msd_hippocampus folds 1-4 with configs/hippocampus_gpu.yaml; fold-0 Dice on every case."""
    from medseg.config.loader import load_config
    from medseg.data.recipes import packaged_folder
    from medseg.train.api import train

    overrides = [f"train.device={device}", f"work_dir={cache_dir}", f"run_dir={run_dir}", "preprocess.workers=8"]
    if dry_run:
        overrides += ["train.max_minutes=0.05", "train.val_max_cases=2", "model.base_features=4", "train.batch_size=2"]
    else:
        overrides += [f"train.max_minutes={minutes}"]
    config = load_config(packaged_folder("medseg.configs") / "hippocampus_gpu.yaml", overrides)
    config.dataset = hippocampus
    started = time.perf_counter()
    (result,) = train(config, [0], progress=False)
    validation = result.last_validation or {}
    return {"status": "ok", "minutes_budget": config.train.max_minutes, "wall_minutes": round((time.perf_counter() - started) / 60, 2),
            "iterations": result.iterations_done, "epochs": result.epochs_done, "compile": config.train.compile,
            "fold0_dice": {str(k): round(v, 4) for k, v in validation.get("dice", {}).items()}, "validation": validation.get("kind")}


class BackgroundAccuracy:
    """The accuracy run in its own process, started first: its minutes of training overlap the short
    correctness stages (which report no timings), and the timed stages run after it, on an idle GPU."""

    def __init__(self, device: str, dry_run: bool, work: Path, hippocampus: Path, minutes: float, shared: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.result_path, self.log_path = work / "result.json", work / "log.txt"
        arguments = {"device": device, "dry_run": dry_run, "run_dir": str(work / "hippo_run"), "cache_dir": str(shared / "hippocampus"),
                     "hippocampus": str(hippocampus), "minutes": minutes}
        script = ("import json, sys\nfrom medseg.bench.gpu import accuracy_run\n"
                  f"result = accuracy_run(**{arguments!r})\nopen({str(self.result_path)!r}, 'w').write(json.dumps(result))\n")
        self.started = time.perf_counter()
        with open(self.log_path, "w") as log_file:
            self.process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=_child_env(), stdout=log_file, stderr=subprocess.STDOUT)

    def result(self, timeout_s: float) -> dict[str, Any]:
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            return {"status": "error", "error": f"the accuracy run did not end within {timeout_s / 60:.0f} minutes and was stopped",
                    "tail": self.log_path.read_text(errors="replace")[-1500:]}
        if code != 0 or not self.result_path.is_file():
            tail = self.log_path.read_text(errors="replace")[-1500:] if self.log_path.is_file() else ""
            return {"status": "error", "error": f"the accuracy run exited with code {code}", "tail": tail}
        return json.loads(self.result_path.read_text())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


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
    "tests": stage_tests, "resume": stage_resume, "resume_compiled": stage_resume_compiled, "ddp": stage_ddp, "throughput": stage_throughput, "inference": stage_inference,
}
CORRECTNESS, TIMED = ("tests", "resume", "resume_compiled", "ddp"), ("throughput", "inference")


# --- report --------------------------------------------------------------------------------------
def render_markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    gpu = machine.get("gpu") or {}
    lines = [f"# medseg bench gpu ({result['date']}{', dry run on the CPU' if result['dry_run'] else ''})", "",
             f"GPU: {gpu.get('name', 'none')} ({gpu.get('memory_gb', '-')} GB, CUDA {gpu.get('cuda', '-')}, cuDNN {gpu.get('cudnn', '-')}); "
             f"CPU: {machine['cpu']}, {machine['cores']} cores; packages: "
             + ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v), "", "| stage | status | result |", "|---|---|---|"]
    for name, stage in result["stages"].items():
        details = {k: v for k, v in stage.items() if k not in ("status", "rows", "options", "tail", "error")}
        lines.append(f"| {name} | {stage['status']} | {json.dumps(details)[:300] if details else ''}{stage.get('error', '')} |")
    throughput = result["stages"].get("throughput", {}).get("rows", [])
    if throughput:
        lines += ["", "| plan | patch x batch | steps/s | s/step (median) | loader wait | GPU busy % | peak GPU GB |", "|---|---|---|---|---|---|---|"]
        for row in throughput:
            lines.append(f"| {row['plan']} | {row['patch_size']} x {row['batch_size']} | {row['steps_per_s']} | {row['step_s_median']} | "
                         f"{row['loader_wait_share']:.0%} | {row['gpu_utilization_pct'] if row['gpu_utilization_pct'] is not None else '-'} | "
                         f"{row['peak_gpu_memory_gb'] if row['peak_gpu_memory_gb'] is not None else '-'} |")
    options = result["stages"].get("throughput", {}).get("options", [])
    if options:
        lines += ["", "Training-step options on the ct_128 plan, each alone against the defaults:", "",
                  "| option | s/step (median) | speed-up vs default | peak GPU GB | wall s (incl. warm-up/compile) |", "|---|---|---|---|---|"]
        for row in options:
            if "error" in row:
                lines.append(f"| {row['variant']} | failed: {row['error']} | | | |")
            else:
                lines.append(f"| {row['variant']} | {row['step_s_median']} | {row['speedup_vs_default']}x | {row['peak_gpu_memory_gb'] or '-'} | {row['wall_s']} |")
    inference = result["stages"].get("inference", {}).get("rows", [])
    if inference:
        lines += ["", "| model | TTA | run | seconds (read to mask written) | stages (s) |", "|---|---|---|---|---|"]
        for row in inference:
            stages = ", ".join(f"{k} {v}" for k, v in row["stages_s"].items())
            lines.append(f"| {row['model']} | {'on' if row['tta'] else 'off'} | {row['run']} | {row['seconds']} | {stages} |")
    return "\n".join(lines) + "\n"


def _write(out: Path, result: dict[str, Any]) -> str:
    """JSON and markdown, rewritten after every stage: a bench stopped from outside keeps what it measured."""
    write_json(out, result)
    return write_text(out.with_suffix(".md"), render_markdown(result)).read_text()


def bench_gpu(out: str | Path, data_dir: str | Path | None = None, dry_run: bool = False, minutes: float = 5.0,
              skip: list[str] | None = None, work_dir: str | Path | None = None, step_options: bool = False) -> dict[str, Any]:
    """Run every stage not in ``skip``; write ``out`` (JSON) and the markdown beside it after each stage.

    The accuracy run starts first in its own process and trains beside the correctness stages
    (tests, resume, ddp); throughput and inference are timed after it ends, with the GPU to themselves.
    ``step_options`` adds each training-step option (fp32, channels_last_3d, foreach, eager) timed alone (~1.5 min).
    """
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
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="medseg_bench_gpu_") as temporary:
        work = Path(work_dir or temporary)
        shared = work / "shared"  # the hippocampus cache, preprocessed once for the accuracy and throughput stages
        accuracy = None
        if "accuracy" not in skip and hippocampus is not None:
            log.info("bench gpu: accuracy (%.1f minutes of training, in the background)", minutes)
            accuracy = BackgroundAccuracy(device, dry_run, work / "accuracy", hippocampus, minutes, shared)
        try:
            _run_stages(result, out, work, work_dir is None, skip, accuracy, device=device, dry_run=dry_run, hippocampus=hippocampus,
                        shared=shared, step_options=step_options, minutes=minutes)
        finally:  # an interrupted bench leaves no training behind
            if accuracy is not None:
                accuracy.stop()
    result["table"] = _write(out, result)
    return result


def _run_stages(result: dict[str, Any], out: Path, work: Path, temporary: bool, skip: list[str], accuracy: BackgroundAccuracy | None,
                minutes: float, **options: Any) -> None:
    """Correctness stages (beside the background accuracy run), the accuracy result, then the timed stages."""
    begun = time.perf_counter()
    for name in (*CORRECTNESS, "accuracy", *TIMED):
        if name in skip:
            continue
        started = time.perf_counter()
        log.info("bench gpu: %s", name)
        try:
            if name == "accuracy" and accuracy is None:
                stage = {"status": "skipped", "reason": "msd_hippocampus not found (give --data)"}
            elif name == "accuracy":
                stage, started = accuracy.result(timeout_s=minutes * 60 + ACCURACY_GRACE_S), accuracy.started
            else:
                (work / name).mkdir(parents=True, exist_ok=True)
                stage = STAGE_FUNCTIONS[name](work=work / name, **options)
        except Exception as error:  # one broken stage must not hide the others' numbers
            log.debug("bench gpu: stage %s failed", name, exc_info=True)
            stage = {"status": "error", "error": f"{type(error).__name__}: {str(error)[:500]}", "tail": traceback.format_exc()[-1500:]}
        stage["seconds"] = round(time.perf_counter() - started, 1)
        result["stages"][name] = stage
        result["total_minutes"] = round((time.perf_counter() - begun) / 60, 2)
        _write(out, result)
        if temporary:  # the temporary folder goes anyway; free its disk stage by stage
            shutil.rmtree(work / name, ignore_errors=True)

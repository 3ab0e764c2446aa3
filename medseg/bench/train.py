"""`medseg bench train`: training throughput and whether the data loader keeps the device busy.

Times the exact step training runs (:class:`medseg.train.step.TrainStep`, through the public
``Trainer.session``) on the batches of the run's own data stream, after a warm-up. GPU
utilisation is sampled with NVML when it is there.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import torch

from medseg.bench.common import machine_info
from medseg.config.schema import RunConfig
from medseg.io.atomic import write_json
from medseg.train.loader import make_loader
from medseg.train.trainer import Trainer


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

    def start(self) -> None:
        if self.device.type == "cuda" and not self._thread.is_alive():
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def __enter__(self) -> UtilizationSampler:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_train(config: RunConfig, cache_dir: str | Path, iterations: int = 30, warmup: int = 5, out_json: str | Path | None = None,
                run_dir: str | Path | None = None) -> dict:
    """Time ``iterations`` training steps after ``warmup``: step time, loader wait per step, steps/s."""
    work = Path(run_dir) if run_dir else (Path(out_json).parent / "bench_run" if out_json else Path("bench_run"))
    trainer = Trainer(config, cache_dir, work, progress=False)
    device = trainer.runtime.device
    waits, steps = [], []
    sampler = UtilizationSampler(device)  # sampled only over the timed steps, not the warm-up or compile
    with trainer.session as step:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        loader = make_loader(trainer.stream(0, warmup + iterations), trainer.workers, pin_memory=device.type == "cuda")
        step.network.train()
        tick = time.perf_counter()
        try:
            for index, batch in enumerate(loader):
                if index == warmup:
                    sampler.start()
                fetched = time.perf_counter()
                step(batch, config.train.lr)
                _sync(device)
                done = time.perf_counter()
                if index >= warmup:
                    waits.append(fetched - tick)
                    steps.append(done - fetched)
                tick = time.perf_counter()
        finally:  # a failed run must not leave the sampler polling beside the next one
            sampler.stop()
        step.losses_since_sync(warmup + iterations)
        parameters = sum(p.numel() for p in step.network.parameters())
        compiled = type(step.model).__name__ == "OptimizedModule"  # torch.compile's wrapper; not there if compiling failed
    result = {
        "machine": machine_info(),
        "device": str(device),
        "torch_threads": trainer.runtime.threads,
        "num_workers": trainer.workers,
        "configuration": trainer.configuration.name,
        "patch_size": list(trainer.configuration.patch_size),
        "batch_size": trainer.configuration.batch_size,
        "model": config.model.name,
        "parameters": parameters,
        "options": {"channels_last": config.train.channels_last, "compile": config.train.compile, "compiled": compiled, "fused_optimizer": config.train.fused_optimizer,
                    "amp": str(trainer.runtime.autocast_dtype)},
        "iterations": len(steps),
        "step_s_mean": float(np.mean(steps)),
        "step_s_median": float(np.median(steps)),
        "loader_wait_s_mean": float(np.mean(waits)),
        "loader_wait_share": float(np.sum(waits) / (np.sum(waits) + np.sum(steps))),
        "steps_per_s": float(len(steps) / (np.sum(waits) + np.sum(steps))),
        "gpu_utilization_pct_mean": sampler.mean,
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None,
    }
    if out_json:
        write_json(out_json, result)
    return result

"""`medseg bench train`: training throughput and whether the data loader keeps the device busy.

Times the exact step training runs (:class:`medseg.train.step.TrainStep`, through the public
``Trainer.session``) on the batches of the run's own data stream, after a warm-up. GPU
utilisation is sampled with NVML when it is there.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from medseg.bench.common import machine_info
from medseg.config.schema import RunConfig
from medseg.io.atomic import write_json
from medseg.train.loader import make_loader
from medseg.train.trainer import Trainer


def gpu_utilization(device: torch.device) -> float | None:
    """Percent of the last sample period the GPU was busy (NVML via torch), or None."""
    if device.type != "cuda":
        return None
    try:
        return float(torch.cuda.utilization(device))
    except Exception:  # needs pynvml or the NVML library; optional
        return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_train(config: RunConfig, cache_dir: str | Path, iterations: int = 30, warmup: int = 5, out_json: str | Path | None = None,
                run_dir: str | Path | None = None) -> dict:
    """Time ``iterations`` training steps after ``warmup``: step time, loader wait per step, steps/s."""
    work = Path(run_dir) if run_dir else (Path(out_json).parent / "bench_run" if out_json else Path("bench_run"))
    trainer = Trainer(config, cache_dir, work, progress=False)
    device = trainer.runtime.device
    waits, steps, utilization = [], [], []
    with trainer.session as step:
        loader = make_loader(trainer.stream(0, warmup + iterations), trainer.workers, pin_memory=device.type == "cuda")
        step.network.train()
        tick = time.perf_counter()
        for index, batch in enumerate(loader):
            fetched = time.perf_counter()
            step(batch, config.train.lr)
            _sync(device)
            done = time.perf_counter()
            if index >= warmup:
                waits.append(fetched - tick)
                steps.append(done - fetched)
                value = gpu_utilization(device)
                if value is not None:
                    utilization.append(value)
            tick = time.perf_counter()
        step.losses_since_sync(warmup + iterations)
        parameters = sum(p.numel() for p in step.network.parameters())
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
        "options": {"channels_last": config.train.channels_last, "compile": config.train.compile, "fused_optimizer": config.train.fused_optimizer,
                    "amp": str(trainer.runtime.autocast_dtype)},
        "iterations": len(steps),
        "step_s_mean": float(np.mean(steps)),
        "step_s_median": float(np.median(steps)),
        "loader_wait_s_mean": float(np.mean(waits)),
        "loader_wait_share": float(np.sum(waits) / (np.sum(waits) + np.sum(steps))),
        "steps_per_s": float(len(steps) / (np.sum(waits) + np.sum(steps))),
        "gpu_utilization_pct_mean": float(np.mean(utilization)) if utilization else None,
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None,
    }
    if out_json:
        write_json(out_json, result)
    return result

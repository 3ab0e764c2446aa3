"""`medseg bench train`: training throughput and whether the data loader keeps the device busy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from medseg.data.cache import load_case_arrays
from medseg.run_config import RunConfig
from medseg.train.loader import PatchBatches, make_loader
from medseg.train.trainer import Trainer


def _gpu_utilization(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    try:
        return float(torch.cuda.utilization(device))
    except Exception:  # needs pynvml; optional
        return None


def bench_train(config: RunConfig, cache_dir: str | Path, iterations: int = 30, warmup: int = 5, out_json: str | Path | None = None) -> dict:
    """Time ``iterations`` training steps after ``warmup``: step time, loader wait per step, steps/s."""
    trainer = Trainer(config, cache_dir, Path(out_json).parent / "bench_run" if out_json else Path("bench_run"), progress=False)
    batch_size = int(trainer.configuration["batch_size"])
    dataset = PatchBatches(lambda case_id: load_case_arrays(trainer.cache_dir, case_id),
                           trainer.train_ids, trainer.patch_size, batch_size, config.augment, config.train.foreground_share,
                           warmup + iterations, config.train.seed, 0, 0, trainer.anisotropic, trainer.slice_axis)
    workers = trainer.num_workers()
    loader = make_loader(dataset, workers, pin_memory=trainer.device.type == "cuda")
    waits, steps, utilization = [], [], []
    trainer.network.train()
    tick = time.perf_counter()
    for index, batch in enumerate(loader):
        fetched = time.perf_counter()
        trainer._step(batch)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        done = time.perf_counter()
        if index >= warmup:
            waits.append(fetched - tick)
            steps.append(done - fetched)
            value = _gpu_utilization(trainer.device)
            if value is not None:
                utilization.append(value)
        tick = time.perf_counter()
    result = {
        "device": str(trainer.device),
        "device_name": torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "num_workers": workers,
        "patch_size": list(trainer.patch_size),
        "batch_size": batch_size,
        "model": config.model.name,
        "parameters": sum(p.numel() for p in trainer.network.parameters()),
        "iterations": len(steps),
        "step_s_mean": float(np.mean(steps)),
        "loader_wait_s_mean": float(np.mean(waits)),
        "loader_wait_share": float(np.sum(waits) / (np.sum(waits) + np.sum(steps))),
        "steps_per_s": float(len(steps) / (np.sum(waits) + np.sum(steps))),
        "gpu_utilization_pct_mean": float(np.mean(utilization)) if utilization else None,
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated(trainer.device) / 1e9 if trainer.device.type == "cuda" else None,
    }
    if out_json:
        Path(out_json).write_text(json.dumps(result, indent=2))
    return result

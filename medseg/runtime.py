"""One runtime layer for training and inference: device, AMP dtype, threads, ``cudnn.benchmark`` and seeds.

:func:`resolve_runtime` turns config strings (``device: auto``, ``amp: auto``, ``threads: null``)
into a :class:`Runtime`; :func:`runtime_scope` applies it for the duration of a block and puts back
everything it changed (thread count, cudnn flag, current CUDA device, and the global RNG states
when it seeds them), so a Python API call (``train(...)``, ``Segmenter(...).predict(...)``) leaves
no global torch state behind, as TotalSegmentator's API does.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from medseg.errors import ConfigError

AMP_CHOICES = ("auto", "bf16", "fp16", "off")


@dataclass(frozen=True)
class Runtime:
    """Resolved execution settings of one training or inference session."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    threads: int
    cudnn_benchmark: bool = False
    deterministic: bool = False  # deterministic kernels (cuDNN, cuBLAS): exact resume on a GPU, at some speed

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 training needs loss scaling; bf16 has fp32's range and does not."""
        return self.autocast_dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def describe(self) -> dict[str, object]:
        return {"device": str(self.device), "amp": None if self.autocast_dtype is None else str(self.autocast_dtype).replace("torch.", ""),
                "threads": self.threads if self.device.type == "cpu" else None}


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def resolve_device(name: str, local_rank: int = 0, setting: str = "device") -> torch.device:
    """``auto`` = the local rank's CUDA GPU when there is one, else the CPU; plain ``cuda`` = the local rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"{setting}={name!r} is not a device (use auto, cpu, cuda, cuda:1, ...)") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting}={name} but no CUDA device is available; use cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{setting}={name}: medseg runs on cpu or cuda")
    if device.type == "cuda" and device.index is None:  # plain "cuda": this rank's GPU (set_device needs an index)
        device = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))  # one visible GPU per rank: cuda:0
    return device


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Sapphire Rapids and later), where bf16 convolutions run natively."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # older torch, or a CPU torch cannot query
        return False


def resolve_amp(amp: str, device: torch.device, training: bool = False) -> torch.dtype | None:
    """auto: bf16 on CUDA when supported, else fp16. On a CPU, bf16 for *training* where the CPU has AMX: a
    training step of the new-user CPU plan took 0.145 s instead of 0.297 s on a 2-core AMX Xeon. CPU inference
    stays fp32 by default, because bf16 masks are not bit-identical (bf16 there is opt-in)."""
    if amp not in AMP_CHOICES:
        raise ConfigError(f"amp={amp!r}: choose one of {', '.join(AMP_CHOICES)}")
    if amp == "off":
        return None
    if amp == "auto" and device.type != "cuda":
        return torch.bfloat16 if training and cpu_has_amx() else None
    if amp == "fp16":
        if device.type != "cuda":
            raise ConfigError("amp=fp16 needs CUDA; on CPU use bf16 or off")
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def resolve_runtime(device: str = "auto", amp: str = "auto", threads: int | None = None, *, local_rank: int = 0,
                    world_size: int = 1, training: bool = False, deterministic: bool = False) -> Runtime:
    """Config strings -> a Runtime; CPU threads default to this process's share of the cores."""
    chosen = resolve_device(device, local_rank, "train.device" if training else "infer.device")
    count = threads or max(1, available_cores() // max(world_size, 1))
    return Runtime(chosen, resolve_amp(amp, chosen, training), count, cudnn_benchmark=chosen.type == "cuda" and not deterministic,
                   deterministic=deterministic)


def capture_global_rng() -> dict[str, object]:
    state: dict[str, object] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_global_rng(state: dict[str, object]) -> None:
    random.setstate(state["python"])  # type: ignore[arg-type]
    np.random.set_state(state["numpy"])  # type: ignore[arg-type]
    torch.set_rng_state(state["torch"])  # type: ignore[arg-type]
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])  # type: ignore[arg-type]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too


@contextlib.contextmanager
def runtime_scope(runtime: Runtime, seed: int | None = None) -> Iterator[Runtime]:
    """Apply ``runtime`` (and ``seed``) inside the block; restore threads, cudnn, CUDA device and RNG after it."""
    threads = torch.get_num_threads()
    benchmark, cudnn_deterministic = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    algorithms = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    cuda_device = torch.cuda.current_device() if runtime.cuda else None
    rng = capture_global_rng() if seed is not None else None
    try:
        torch.set_num_threads(runtime.threads)
        torch.backends.cudnn.benchmark = runtime.cudnn_benchmark
        if runtime.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.deterministic = True
            torch.use_deterministic_algorithms(True, warn_only=True)
        if runtime.cuda:
            torch.cuda.set_device(runtime.device)
        if seed is not None:
            seed_everything(seed)
        yield runtime
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = benchmark, cudnn_deterministic
        torch.use_deterministic_algorithms(algorithms[0], warn_only=algorithms[1])
        if runtime.deterministic and cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        if cuda_device is not None:
            torch.cuda.set_device(cuda_device)
        if rng is not None:
            restore_global_rng(rng)


def threads_scope(count: int) -> contextlib.AbstractContextManager:
    """Use ``count`` CPU threads inside the block, the caller's setting after it."""
    return runtime_scope(Runtime(torch.device("cpu"), None, count))

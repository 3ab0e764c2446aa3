"""Which machine a plan is sized for: detected here, a named preset, or given in the config.

A GPU plan fits patch and batch into the GPU's memory (nnU-Net's rule with the detected budget
instead of a fixed 8 GB). A CPU plan sizes them by compute: the number of voxels one training step
may process, per core, measured with ``medseg bench train`` (``reports/train_hippocampus_cpu.md``:
batch 2 of a 40x56x40 patch at 16 base features is the fastest learner on 2 cores).
``--device``/``plan.device`` plans on one machine for another.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from medseg.data.config import PlanConfig
from medseg.errors import ConfigError
from medseg.schema.plan import DeviceProfile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    kind: str
    memory_gb: float
    cores: int
    description: str


#: Machines users plan for most often; ``plan.device=<name>``.
PRESETS: dict[str, Preset] = {
    "gpu-8gb": Preset("cuda", 8.0, 8, "nnU-Net's reference budget (an 8 GB GPU such as an RTX 2080)"),
    "rtx4090": Preset("cuda", 24.0, 16, "NVIDIA RTX 4090 / RTX 3090 (24 GB)"),
    "a100-40gb": Preset("cuda", 40.0, 16, "NVIDIA A100 40 GB"),
    "a100": Preset("cuda", 80.0, 16, "NVIDIA A100 80 GB"),
    "h100": Preset("cuda", 80.0, 16, "NVIDIA H100 80 GB"),
    "h200": Preset("cuda", 141.0, 16, "NVIDIA H200 141 GB"),
    "laptop": Preset("cpu", 16.0, 4, "a 4-core laptop CPU"),
    "cpu-2core": Preset("cpu", 8.0, 2, "a 2-core CPU (CI runners, small cloud VMs)"),
}


def _ram_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError, AttributeError):
        return 8.0


def _cores() -> int:
    from medseg.runtime import available_cores

    return available_cores()


def _detect_cuda() -> DeviceProfile | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    properties = torch.cuda.get_device_properties(0)
    return DeviceProfile(kind="cuda", name=properties.name, memory_gb=round(properties.total_memory / 1024**3, 1), cores=_cores(), source="detected")


def _cpu_profile(source: str) -> DeviceProfile:
    import platform

    return DeviceProfile(kind="cpu", name=platform.processor() or platform.machine() or "cpu", memory_gb=round(_ram_gb(), 1), cores=_cores(), source=source)


def device_profile(config: PlanConfig) -> DeviceProfile:
    """The machine ``config`` plans for: ``auto`` = this one (its CUDA GPU if any, else its CPU)."""
    name = config.device
    if name in PRESETS:
        preset = PRESETS[name]
        profile = DeviceProfile(kind=preset.kind, name=preset.description, memory_gb=preset.memory_gb, cores=preset.cores, source=f"preset {name}")
    elif name == "cpu":
        profile = _cpu_profile("set in the config (plan.device=cpu)")
    elif name in ("auto", "cuda"):
        profile = _detect_cuda()
        if profile is None:
            if name == "cuda":
                raise ConfigError("plan.device=cuda but no CUDA GPU is visible; plan for one with a preset "
                                  f"({', '.join(p for p, v in PRESETS.items() if v.kind == 'cuda')}) or plan.gpu_memory_gb")
            profile = _cpu_profile("detected (no CUDA GPU)")
    else:
        raise ConfigError(f"plan.device={name!r} is not known; use auto, cpu, cuda or a preset: {', '.join(PRESETS)}")
    updates = {}
    if config.gpu_memory_gb is not None and profile.kind == "cuda":
        updates["memory_gb"], updates["source"] = config.gpu_memory_gb, profile.source + ", memory set in the config"
    if config.cpu_cores is not None:
        updates["cores"] = config.cpu_cores
    return profile.model_copy(update=updates) if updates else profile

"""What every benchmark records: the machine, its load, package versions, and where the shared test data is.

Benchmarks live in :mod:`medseg.bench` and use medseg's public API only; their results (JSON and
markdown) are written where the user says, and the ones the project keeps are committed under
``reports/`` with the machine they ran on. No goal is written into benchmark code: a report states
the measured numbers and ratios, and the reader (or the issue) judges them.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from medseg.versions import package_versions


def shared_data_file(relative: str | Path) -> Path | None:
    """A file of the shared test data (``$MEDSEG_TEST_DATA``, default ``../shared/data``), or None when absent."""
    root = Path(os.environ.get("MEDSEG_TEST_DATA", "../shared/data"))
    path = root / relative
    return path if path.is_file() else None


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), platform.processor())
    except OSError:
        return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            return round(int(handle.readline().split()[1]) / 1024**2, 1)
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU, cores, RAM, GPU (name, memory, driver) and versions: enough to reproduce a number."""
    import torch

    gpu = None
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        gpu = {"name": properties.name, "memory_gb": round(properties.total_memory / 1024**3, 1), "count": torch.cuda.device_count(),
               "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    versions = package_versions()
    return {"cpu": _cpu_name(), "cores": os.cpu_count(), "memory_gb": _memory_gb(), "gpu": gpu, "python": platform.python_version(),
            "platform": platform.platform(), "packages": versions,
            # flat keys kept for the reports that already print them
            "torch": versions["torch"], "monai": versions["monai"], "numpy": versions["numpy"], "simpleitk": versions["SimpleITK"]}

"""Where a run came from: git SHA, package versions, device. Written into every run folder."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

from medseg.versions import package_versions


def git_sha(start: Path | None = None) -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=start or Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def environment_report(device: torch.device) -> dict:
    versions = package_versions()
    return {
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "packages": versions,
    }

"""nnU-Net v2 for the peer bench: one pinned version, installed beside the user's torch and never over it.

Why not simply ``pip install nnunetv2``: dynamic-network-architectures (nnU-Net's networks) requires timm, timm
requires torchvision, and on a CPU-only torch pip then either replaces torch with a CUDA build (the newest
torchvision wants a newer torch, gigabytes of CUDA wheels) or installs the torchvision built for this torch, whose
``_C.so`` links ``libtorch_cuda.so`` and fails to load. nnU-Net's trainer lookup by name imports every trainer
module, and ``nnunetv2/training/nnUNetTrainer/primus/primus_trainers.py`` imports
``dynamic_network_architectures.architectures.primus``, which imports timm: without a working timm, any trainer
name outside nnUNetTrainer.py (and ``nnUNetv2_predict`` of such a model) fails with "No module named 'timm'".

What the bench does instead: the ``peers`` extra of medseg (``pip install 'medseg[peers]'``) installs nnunetv2's
other requirements, which accept any torch; this module installs :data:`PINNED` with ``--no-deps`` into
``<peers dir>/nnunetv2-<version>/`` (default ``medseg_peers/``, or ``$MEDSEG_PEERS_DIR``), and only the nnU-Net
child process gets that folder on its path. The child never triggers trainer discovery: its trainer subclass is
run directly and its predictor is initialised by hand from the plans and the checkpoint, so timm and torchvision
are never imported (the child records which of them it saw imported, :data:`NEVER_IMPORTED`). The only other
users of timm in dynamic-network-architectures are ``building_blocks/eva.py`` and ``architectures/dinov2_eva.py``
(Primus and DINOv2-EVA networks), which nnU-Net's default plans never name. An environment that already holds the
pinned nnunetv2 (a GPU machine with wheels carried in) is used as it is.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from medseg.errors import MedsegError, brief

log = logging.getLogger(__name__)

NNUNET_VERSION = "2.8.1"
#: Installed with --no-deps; dynamic-network-architectures pinned to the version nnunetv2 2.8.1 was released with.
PINNED = (f"nnunetv2=={NNUNET_VERSION}", "dynamic-network-architectures==0.4.4")
#: Modules that nnU-Net's planning, default trainer and predictor import, from the ``peers`` extra (import names).
EXTRA_MODULES = ("acvl_utils", "batchgenerators", "batchgeneratorsv2", "blosc2", "cc3d", "sklearn", "skimage", "pandas",
                 "tifffile", "einops", "seaborn", "tqdm", "threadpoolctl", "SimpleITK", "nibabel", "matplotlib")
#: What nnU-Net's default path must never import here (see the module docstring).
NEVER_IMPORTED = ("timm", "torchvision")
INSTALL_COMMAND = "pip install 'medseg[peers]'"


def default_peers_dir() -> Path:
    return Path(os.environ.get("MEDSEG_PEERS_DIR", "medseg_peers"))


def site_folder(peers_dir: str | Path | None = None) -> Path:
    """Where the pinned nnunetv2 goes: ``<peers dir>/nnunetv2-<version>``."""
    return Path(peers_dir or default_peers_dir()) / f"nnunetv2-{NNUNET_VERSION}"


def _version(name: str, folder: Path | None = None) -> str | None:
    """Installed version of distribution ``name`` in ``folder`` (or in this environment)."""
    if folder is not None:
        found = [dist.version for dist in importlib.metadata.distributions(name=name, path=[str(folder)])]
        return found[0] if found else None
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing_modules() -> list[str]:
    """The modules of :data:`EXTRA_MODULES` this environment lacks."""
    return [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]


def _pip_install(target: Path) -> None:
    """``pip install --no-deps --target`` into a fresh folder, renamed into place when complete."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--disable-pip-version-check", "--target", str(partial), *PINNED]
    log.info("installing %s with --no-deps into %s", " and ".join(PINNED), target)
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise MedsegError(f"could not run pip to install {' '.join(PINNED)}: {brief(error)}") from error
    if completed.returncode != 0:
        tail = (completed.stderr.strip().splitlines() or completed.stdout.strip().splitlines() or ["no output"])[-1]
        raise MedsegError(f"pip could not install {' '.join(PINNED)} into {partial}: {tail}")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def ensure_nnunet(peers_dir: str | Path | None = None, install: bool = True) -> Path | None:
    """The folder to put first on the nnU-Net child's path, or None when this environment holds the pinned nnunetv2.

    Installs :data:`PINNED` there when it is missing (``install``); checks that the ``peers`` extra is installed.
    """
    missing = missing_modules()
    if missing:
        raise MedsegError(f"nnU-Net needs {', '.join(missing)}, which this environment lacks: {INSTALL_COMMAND} "
                          "(installs nnunetv2's requirements next to your torch, never over it)")
    if _version("nnunetv2") == NNUNET_VERSION and _version("dynamic-network-architectures"):
        return None
    site = site_folder(peers_dir)
    if _version("nnunetv2", site) != NNUNET_VERSION or not _version("dynamic-network-architectures", site):
        if not install:
            raise MedsegError(f"nnunetv2 {NNUNET_VERSION} is not in {site}: run without --no-install to install it there "
                              f"(pip install --no-deps --target {site} {' '.join(PINNED)})")
        _pip_install(site)
    return site.resolve()

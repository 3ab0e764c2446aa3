"""Atomic file writes: the output either appears whole, or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medseg.errors import InputError

# Suffixes some writers read to choose the format, so the temporary file must keep them.
_MULTI_SUFFIXES = (".nii.gz", ".tar.gz")


def full_suffix(path: str | Path) -> str:
    name = Path(path).name.lower()
    for suffix in _MULTI_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(path).suffix.lower()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary file keeps the destination's suffix so format-sniffing writers (nibabel,
    SimpleITK) behave the same. On any exception it is removed and ``path`` is untouched.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(path, f"output folder {parent} does not exist")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{full_suffix(path)}", dir=parent)
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        # mkstemp creates files readable by the owner only; give the result normal permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary_path, 0o666 & ~umask)
        os.replace(temporary_path, path)
    finally:
        if temporary_path.exists():
            temporary_path.unlink()

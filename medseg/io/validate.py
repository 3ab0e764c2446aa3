"""The checks every volume passes when it is read, whatever its format.

Two stages, one owner:

* :func:`check_declared_size` and :func:`check_voxel_type` run on the *header*, before a reader
  allocates anything: a 200-byte file that declares a 10 GB volume is refused from its size
  alone, so memory stays bounded by the file, not by what the header claims.
* :func:`validate_volume` runs on every :class:`~medseg.io.volume.Volume` that
  :func:`medseg.io.readers.read_volume` returns, before anything uses it: the affine is finite and
  invertible, voxel sizes are positive, voxels are real integers or floats.

Size limit: at most ``MEDSEG_MAX_VOXELS`` values (voxels x channels) per volume, default
:data:`DEFAULT_MAX_VOXELS` (2**30, e.g. 1024^3, 2 GiB as int16). Genuine larger scans need the
environment variable raised; the refusal message says so.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from medseg.errors import ConfigError, InputError

MAX_VOXELS_ENV = "MEDSEG_MAX_VOXELS"
DEFAULT_MAX_VOXELS = 1 << 30
# Deflate (gzip, zlib) cannot expand data more than 1032:1 (a 258-byte match per 2 bits), so a
# deflate stream of N bytes never holds more than N * 1032 bytes: a header claiming more is lying.
DEFLATE_MAX_RATIO = 1032
# Above this condition number the voxel axes are (numerically) parallel: no world position is unique.
_MAX_CONDITION = 1e10


def max_voxels() -> int:
    """The configured limit on values per volume (``MEDSEG_MAX_VOXELS``, default 2**30)."""
    text = os.environ.get(MAX_VOXELS_ENV, "").strip().replace("_", "")
    if not text:
        return DEFAULT_MAX_VOXELS
    try:
        value = int(float(text)) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{MAX_VOXELS_ENV}={os.environ[MAX_VOXELS_ENV]!r} is not a positive number of voxels")
    return value


def _bytes_text(count: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


def voxel_type_problem(dtype: np.dtype) -> str | None:
    """Why medseg cannot use voxels of ``dtype`` (None when it can): only real integers and floats."""
    dtype = np.dtype(dtype)
    if dtype.fields is not None or dtype.kind == "V":
        names = ", ".join(dtype.names or ()) or "opaque bytes"
        return f"has structured voxels ({names}: e.g. RGB colour); medseg reads one real number per voxel"
    if dtype.kind == "c":
        return f"has complex voxels ({dtype}); medseg reads real integers or floats, store the magnitude instead"
    if dtype.kind not in "biuf":
        return f"has unsupported voxel type {dtype}"
    if dtype.kind == "f" and dtype.itemsize > 8:
        return f"has {dtype.itemsize * 8}-bit float voxels; medseg reads up to float64"
    return None


def check_voxel_type(dtype: np.dtype, path: Path | str) -> None:
    problem = voxel_type_problem(dtype)
    if problem is not None:
        raise InputError(path, problem)


def check_declared_size(
    path: Path | str,
    shape: tuple[int, ...],
    itemsize: int,
    *,
    available_bytes: int | None = None,
    deflate_bytes: int | None = None,
) -> int:
    """Refuse a header whose declared voxel data cannot be in the file or is over the limit; returns its bytes.

    ``available_bytes``: what the file holds after its header (uncompressed data must fit in it).
    ``deflate_bytes``: size of a gzip/zlib stream that must expand to the data (at most 1032:1).
    """
    dims = [int(n) for n in shape]
    described = " x ".join(map(str, dims))
    if not dims or min(dims) < 1:
        raise InputError(path, f"header declares shape ({described}); every axis needs at least one voxel")
    values = math.prod(dims)
    declared = values * int(itemsize)
    if available_bytes is not None and declared > available_bytes:
        raise InputError(
            path,
            f"header declares {described} voxels ({_bytes_text(declared)}) but the file holds only "
            f"{_bytes_text(max(available_bytes, 0))} of voxel data (truncated, or a corrupt header)",
        )
    if deflate_bytes is not None and declared > deflate_bytes * DEFLATE_MAX_RATIO:
        raise InputError(
            path,
            f"header declares {described} voxels ({_bytes_text(declared)}), more than its "
            f"{_bytes_text(deflate_bytes)} of compressed data can hold (corrupt header or truncated file)",
        )
    limit = max_voxels()
    if values > limit:
        raise InputError(
            path,
            f"header declares {described} = {values:,} voxels ({_bytes_text(declared)}), above the limit of "
            f"{limit:,}; if the scan is genuine, raise it with {MAX_VOXELS_ENV}={values}",
        )
    return declared


def _geometry_problem(affine: np.ndarray) -> str | None:
    if not np.isfinite(affine).all():
        return "affine (voxel-to-world transform) has NaN/inf entries"
    linear = affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    for axis, size in enumerate(spacing):
        if not size > 0:
            return f"voxel size along axis {axis} is 0 (singular affine); the header gives no usable geometry"
    if not np.allclose(affine[3], [0, 0, 0, 1]):
        return f"affine's last row is {affine[3].tolist()}, not [0, 0, 0, 1]"
    if np.linalg.cond(linear / spacing[None, :]) > _MAX_CONDITION:
        return "affine is singular (voxel axes are parallel); no voxel has a unique world position"
    return None


def check_geometry(affine: np.ndarray, path: Path | str) -> None:
    """Refuse an affine that is not finite and invertible, or has a voxel size of 0."""
    problem = _geometry_problem(np.asarray(affine, dtype=float))
    if problem is not None:
        raise InputError(path, problem)


def validate_volume(volume, path: Path | str) -> None:
    """The one post-read check of every volume: real voxel type, finite invertible affine, positive voxel sizes."""
    check_voxel_type(volume.array.dtype, path)
    check_geometry(volume.affine, path)
    if min(volume.array.shape) < 1:
        raise InputError(path, f"has no voxels (shape {volume.array.shape})")

"""Read and write any supported volume by path; the single entry point the rest of medseg uses.

Every failure becomes an :class:`~medseg.errors.InputError` that names the file and the problem,
and every write is atomic.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import numpy as np
from nibabel.filebasedimages import ImageFileError

from medseg.errors import InputError, MedsegError
from medseg.io.atomic import atomic_file_set, atomic_path, full_suffix
from medseg.io.dicom_files import is_dicom_file  # re-exported: callers import it from here
from medseg.io.itk import ITK_SUFFIXES, read_itk, write_itk
from medseg.io.nifti import NIFTI_SUFFIXES, read_nifti, write_nifti
from medseg.io.validate import validate_volume
from medseg.io.volume import MAX_LABEL, Role, Volume, label_dtype

log = logging.getLogger(__name__)

WRITABLE_SUFFIXES = NIFTI_SUFFIXES + (".nrrd", ".mha", ".mhd")
READABLE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES + (".dcm",)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


def _itk_problem(error: BaseException, path: Path) -> str:
    """The informative line of an ITK exception (its first line is only a source-file location)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    teem = [line for line in lines if line.startswith("[nrrd]")]  # NRRD's reader explains itself last
    if teem:
        text = teem[-1].removeprefix("[nrrd]").strip()
        text = text.split(": ", 1)[-1] if text.startswith("_") or text.startswith("nrrd") else text
    else:
        errors = [line for line in lines if "ERROR:" in line]
        text = errors[0].split("): ", 1)[-1] if errors else (lines[0] if lines else type(error).__name__)
    return text.replace(str(path), "file").replace(path.name, "file").rstrip(":")[:200]


def _gzip_is_broken(path: Path) -> bool:
    """Only called after a read failed, so the cost of decompressing once more does not matter."""
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 22):
                pass
        return False
    except (EOFError, OSError, zlib.error):
        return True


def _read_file(path: Path) -> Volume:
    suffix = full_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        try:
            return read_nifti(path)
        except (EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise InputError(path, f"truncated or corrupt compressed NIfTI ({_one_line(error)})") from error
        except MedsegError:
            raise
        except Exception as error:  # nibabel raises many types for malformed headers
            if suffix == ".nii.gz" and _gzip_is_broken(path):
                raise InputError(path, "truncated or corrupt compressed NIfTI (the gzip stream ends early)") from error
            if isinstance(error, ImageFileError):
                raise InputError(path, "not a readable NIfTI file (no valid NIfTI-1/NIfTI-2 header)") from error
            raise InputError(path, f"not a readable NIfTI file ({_one_line(error).replace(str(path), 'file')})") from error
    if suffix in ITK_SUFFIXES:
        try:
            return read_itk(path)
        except MedsegError:
            raise
        except Exception as error:  # SimpleITK raises RuntimeError with a multi-line ITK trace
            raise InputError(path, f"not a readable {suffix.lstrip('.').upper()} file ({_itk_problem(error, path)})") from error
    if suffix == ".dcm" or is_dicom_file(path):
        from medseg.io.dicom import read_dicom_series

        return read_dicom_series(path)
    raise InputError(
        path,
        f"unsupported format '{suffix or 'no extension'}': expected one of {', '.join(READABLE_SUFFIXES)} or a DICOM folder",
    )


def to_label_array(array: np.ndarray, path: Path | str) -> np.ndarray:
    """Check and convert voxel values to an integer label map.

    Float-stored label maps (common in MSD) are rounded; NaN/inf, negative, non-integer values and
    values above :data:`~medseg.io.volume.MAX_LABEL` are refused before any cast, because silently
    truncating or wrapping them (2**33 + 1 -> 1) would invent or erase classes.
    """
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            raise InputError(path, f"label map has {int((~finite).sum())} NaN/inf voxels")
        rounded = np.rint(array)
        off = np.abs(array - rounded).max() if array.size else 0.0
        if off > 1e-3:
            raise InputError(path, f"label map has non-integer values (up to {off:.3g} from the nearest integer)")
        array = rounded
    elif not np.issubdtype(array.dtype, np.integer) and array.dtype != bool:
        raise InputError(path, f"label map has unsupported voxel type {array.dtype}")
    if array.size and array.min() < 0:
        raise InputError(path, f"label map has negative values (min {array.min():g})")
    maximum = int(array.max()) if array.size else 0
    if maximum > MAX_LABEL:
        raise InputError(path, f"label map has value {maximum}, above the largest label medseg stores ({MAX_LABEL}, uint32)")
    return array.astype(label_dtype(maximum), copy=False)


def read_volume(path: str | Path, role: Role = "image", series: str | int | None = None, allow_channels: bool = False) -> Volume:
    """Read a NIfTI/NRRD/MHA/MHD file, a DICOM file or a DICOM series folder.

    ``role="label"`` checks and converts the values to an integer label map. ``series`` picks one
    series (UID or 0-based index) from a DICOM folder holding several. 4D inputs are refused unless
    ``allow_channels``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    if path.is_dir():
        from medseg.io.dicom import read_dicom_series

        volume = read_dicom_series(path, series=series, role=role)
    else:
        size = path.stat().st_size
        if size == 0:
            raise InputError(path, "file is empty (0 bytes)")
        volume = _read_file(path)
    validate_volume(volume, path)
    if volume.array.ndim == 4 and not allow_channels:
        raise InputError(path, f"is 4D (shape {volume.array.shape}); expected a 3D volume")
    volume.meta.setdefault("source", path.name)
    if role == "label":
        if volume.array.ndim == 4:
            raise InputError(path, f"label map is 4D (shape {volume.array.shape}); expected 3D")
        volume = Volume(to_label_array(volume.array, path), volume.affine, "label", volume.meta)
    else:
        volume.role = "image"
    return volume


def write_volume(volume: Volume, path: str | Path) -> Path:
    """Write atomically; the format follows the suffix (.nii, .nii.gz, .nrrd, .mha, .mhd)."""
    path = Path(path)
    suffix = full_suffix(path)
    if suffix not in WRITABLE_SUFFIXES:
        raise InputError(path, f"cannot write format '{suffix or 'no extension'}': use one of {', '.join(WRITABLE_SUFFIXES)}")
    if suffix == ".mhd":  # a header plus its .zraw: both appear only once complete, the header last
        with atomic_file_set(path) as temporary:
            write_itk(volume, temporary)
        log.debug("wrote %s", path)
        return path
    with atomic_path(path) as temporary:
        if suffix in NIFTI_SUFFIXES:
            write_nifti(volume, temporary)
        else:
            write_itk(volume, temporary)
    log.debug("wrote %s", path)
    return path


def write_label_map(labels: np.ndarray, reference: Volume, path: str | Path) -> Path:
    """Write an integer mask with exactly the reference image's grid: shape, affine, qform/sform."""
    labels = np.asarray(labels)
    if labels.shape != reference.shape:
        raise InputError(path, f"mask shape {labels.shape} does not match the reference grid {reference.shape}")
    mask = reference.with_array(to_label_array(labels, path), role="label")
    return write_volume(mask, path)

"""NIfTI-1/2 reading and writing through nibabel, keeping qform/sform (and their codes, 0 included) exactly.

Reading checks the header before any voxel is allocated (:mod:`medseg.io.validate`): declared
size against the file, voxel type, voxel sizes. Compressed voxel data is then streamed into one
buffer of exactly the declared size, so peak memory is about 1x the data (nibabel's own gzip path
holds it twice) and a stream that ends early is refused instead of padded.
"""

from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.nifti1 import data_type_codes

from medseg.errors import InputError
from medseg.io.geometry import is_orthogonal
from medseg.io.validate import check_declared_size, check_voxel_type
from medseg.io.volume import Volume

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_CHUNK_BYTES = 16 << 20  # gzip decompresses through a temporary of this size, not of the whole volume


def _squeeze_to_channels_last(array: np.ndarray, path: Path) -> np.ndarray:
    """(x, y) -> (x, y, 1); (x, y, z, 1) -> (x, y, z); (x, y, z, 1, c) -> (x, y, z, c)."""
    if array.ndim == 2:
        return array[:, :, None]
    extra = [n for n in array.shape[3:] if n != 1]
    if len(extra) > 1:
        raise InputError(path, f"has shape {array.shape}; medseg reads 3D volumes, optionally with one channel axis")
    return array.reshape(array.shape[:3] + tuple(extra))


def _raw_header(path: Path) -> nib.Nifti1Header | None:
    """The header exactly as stored (nibabel's loader silently 'fixes' some fields, e.g. pixdim 0 -> 1)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        block = handle.read(540)
    if len(block) < 348:
        return None  # nibabel's loader gives the precise complaint
    for order in "<>":
        size = struct.unpack(f"{order}i", block[:4])[0]
        if size in (348, 540):
            klass = nib.Nifti1Header if size == 348 else nib.Nifti2Header
            if len(block) < size:
                return None
            return klass(block[:size], endianness=order, check=False)
    return None


def _check_datatype(header: nib.Nifti1Header, path: Path) -> None:
    """Refuse datatype codes nibabel cannot read here (before its loader logs them on stderr)."""
    code = int(header["datatype"])
    codes = data_type_codes
    if code not in codes.code or codes.dtype[code].itemsize == 0:
        label = codes.label[code] if code in codes.code else "unknown"
        raise InputError(path, f"has NIfTI datatype code {code} ({label}), which cannot be read here; medseg reads real integers or floats")
    check_voxel_type(codes.dtype[code], path)


def _check_voxel_sizes(header: nib.Nifti1Header, path: Path) -> None:
    """pixdim must be positive and finite wherever the qform or the fallback affine uses it."""
    if int(header["sform_code"]) > 0 and int(header["qform_code"]) == 0:
        return  # the sform alone carries the geometry
    ndim = int(header["dim"][0])
    pixdim = np.asarray(header["pixdim"][1:4], dtype=float)
    for axis, size in enumerate(pixdim):
        if axis >= ndim and size == 0:
            log.warning("%s: no voxel size for absent axis %d; assuming 1 mm", path, axis)
            continue
        if not np.isfinite(size) or size <= 0:
            raise InputError(path, f"voxel size pixdim[{axis + 1}] is {size:g}; NIfTI voxel sizes must be positive and finite")


def _check_header(image: nib.Nifti1Image, path: Path) -> None:
    """Refuse before allocating: voxel type, and a declared size the file cannot hold."""
    proxy = image.dataobj
    dtype = np.dtype(proxy.dtype)
    check_voxel_type(dtype, path)
    file_bytes = path.stat().st_size
    if path.name.lower().endswith(".gz"):
        check_declared_size(path, proxy.shape, dtype.itemsize, deflate_bytes=file_bytes)
    else:
        check_declared_size(path, proxy.shape, dtype.itemsize, available_bytes=file_bytes - int(proxy.offset))


def _read_gzip_voxels(image: nib.Nifti1Image, path: Path) -> np.ndarray:
    """Unscaled voxels of a .nii.gz, streamed into one buffer of the declared size."""
    proxy = image.dataobj
    dtype = np.dtype(proxy.dtype)
    nbytes = int(np.prod(proxy.shape, dtype=object)) * dtype.itemsize
    try:
        buffer = np.empty(nbytes, np.uint8)  # pages are only touched as data arrives
    except MemoryError:
        raise InputError(path, f"not enough memory for the {nbytes} bytes of voxel data its header declares") from None
    view = memoryview(buffer)
    filled = 0
    with gzip.open(path, "rb") as handle:
        handle.seek(int(proxy.offset))
        while filled < nbytes:
            count = handle.readinto(view[filled : filled + _CHUNK_BYTES])
            if not count:
                break
            filled += count
    if filled < nbytes:
        raise InputError(path, f"truncated or corrupt compressed NIfTI (the data ends after {filled} of the {nbytes} bytes its header declares)")
    array = np.ndarray(proxy.shape, dtype=dtype, buffer=buffer, order="F")
    if not dtype.isnative:
        array = array.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return array


def _read_voxels(image: nib.Nifti1Image, path: Path) -> np.ndarray:
    """Scaled voxels (scl_slope/scl_inter applied exactly as nibabel does)."""
    if not path.name.lower().endswith(".gz"):
        array = np.asanyarray(image.dataobj)
    else:
        from nibabel.volumeutils import apply_read_scaling

        proxy = image.dataobj
        array = apply_read_scaling(_read_gzip_voxels(image, path), np.asanyarray(proxy.slope), np.asanyarray(proxy.inter))
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def read_nifti(path: Path) -> Volume:
    """Read a NIfTI file; the affine is nibabel's choice (sform if its code > 0, else qform, else pixdim)."""
    raw = _raw_header(path)
    if raw is not None:
        _check_datatype(raw, path)
        _check_voxel_sizes(raw, path)
    image = nib.load(str(path))
    _check_header(image, path)
    array = _squeeze_to_channels_last(_read_voxels(image, path), path)
    header = image.header
    qform, _ = image.get_qform(coded=True)
    sform, _ = image.get_sform(coded=True)
    meta = {
        "format": "nifti",
        "nifti_qform_code": int(header["qform_code"]),
        "nifti_sform_code": int(header["sform_code"]),
        "nifti_qform": None if qform is None else np.asarray(qform, dtype=float),
        "nifti_sform": None if sform is None else np.asarray(sform, dtype=float),
        # With both codes 0 the geometry is the pixdim fallback; writing codes 0 again reproduces it.
        "nifti_affine": np.asarray(image.affine, dtype=float),
    }
    return Volume(array, np.asarray(image.affine, dtype=float), meta=meta)


def _keeps_source_forms(volume: Volume) -> bool:
    """True when the volume still sits on its source's grid, so the source's forms and codes are exact."""
    source_affine = volume.meta.get("nifti_affine")
    return source_affine is not None and bool(np.allclose(source_affine, volume.affine, atol=1e-6))


def write_nifti(volume: Volume, path: Path) -> None:
    """Write ``volume``; when it still carries its source's qform/sform, write those and their codes back unchanged."""
    image = nib.Nifti1Image(volume.array, volume.affine)
    meta = volume.meta
    if _keeps_source_forms(volume):
        sform, qform = meta["nifti_sform"], meta["nifti_qform"]
        image.set_sform(sform, code=int(meta["nifti_sform_code"]) if sform is not None else 0)
        image.set_qform(qform, code=int(meta["nifti_qform_code"]) if qform is not None else 0)
    else:
        image.set_sform(volume.affine, code=1)
        if is_orthogonal(volume.affine):
            image.set_qform(volume.affine, code=1)
        else:  # a sheared grid (gantry tilt) has no quaternion form; the sform alone is exact
            image.set_qform(None, code=0)
    image.header.set_xyzt_units("mm", "sec")
    image.set_data_dtype(volume.array.dtype)
    nib.save(image, str(path))

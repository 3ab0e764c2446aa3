"""NRRD and MetaImage (.mha/.mhd) through SimpleITK; ITK works in LPS, so geometry goes through
:mod:`medseg.io.geometry` on the way in and out.

SimpleITK is imported only when such a file is read or written (it costs ~0.3 s and is not needed
for NIfTI/DICOM). Before SimpleITK allocates anything, the header's declared size is compared with
the bytes the file really holds (:mod:`medseg.io.itk_header`, :mod:`medseg.io.validate`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.io.geometry import affine_from_lps, is_orthogonal, lps_from_affine
from medseg.io.itk_header import read_layout
from medseg.io.validate import check_declared_size, check_geometry
from medseg.io.volume import Volume

log = logging.getLogger(__name__)

ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def _component_dtype(sitk, pixel_id: int) -> np.dtype | None:
    """numpy type of one pixel component; None for complex (and other non-real) pixel types."""
    pairs = (
        ("UInt8", np.uint8), ("Int8", np.int8), ("UInt16", np.uint16), ("Int16", np.int16),
        ("UInt32", np.uint32), ("Int32", np.int32), ("UInt64", np.uint64), ("Int64", np.int64),
        ("Float32", np.float32), ("Float64", np.float64),
    )
    for name, dtype in pairs:
        if pixel_id in (getattr(sitk, f"sitk{name}"), getattr(sitk, f"sitkVector{name}")):
            return np.dtype(dtype)
    return None


def _affine(dimension: int, spacing, origin, direction) -> np.ndarray:
    """RAS affine of ITK's (LPS) geometry; a 2D image gets a 1 mm third axis."""
    full_spacing, full_origin, full_direction = np.ones(3), np.zeros(3), np.eye(3)
    full_spacing[:dimension] = spacing
    full_origin[:dimension] = origin
    full_direction[:dimension, :dimension] = np.asarray(direction, dtype=float).reshape(dimension, dimension)
    return affine_from_lps(full_spacing, full_origin, full_direction)


def _check_information(sitk, path: Path) -> None:
    """Header-only checks: dimension, pixel type, geometry, declared size against the file (nothing allocated yet)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    dimension = reader.GetDimension()
    if dimension not in (2, 3):
        raise InputError(path, f"has {dimension} spatial dimensions (size {list(reader.GetSize())}); medseg reads 2D or 3D images")
    check_geometry(_affine(dimension, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()), path)
    dtype = _component_dtype(sitk, reader.GetPixelID())
    if dtype is None:
        kind = sitk.GetPixelIDValueAsString(reader.GetPixelID())
        raise InputError(path, f"has {kind} voxels; medseg reads real integers or floats")
    shape = tuple(reader.GetSize()) + ((reader.GetNumberOfComponents(),) if reader.GetNumberOfComponents() > 1 else ())
    layout = read_layout(path)
    available = layout.data_bytes
    bound: dict[str, int | None] = {}  # bzip2 and others: the voxel limit alone
    if layout.encoding == "raw":
        bound = {"available_bytes": available}
    elif layout.encoding == "deflate":
        bound = {"deflate_bytes": available}
    elif layout.encoding in ("text", "hex") and available is not None:
        # text: at least one digit and one separator per value; hex: two characters per byte
        per_value = 2 if layout.encoding == "text" else 2 * dtype.itemsize
        check_declared_size(path, shape, per_value, available_bytes=available + 1)
    check_declared_size(path, shape, dtype.itemsize, **bound)
    if not layout.has_spacing:
        log.warning("%s: header gives no voxel size; assuming 1 mm", path)


def read_itk(path: Path) -> Volume:
    import SimpleITK as sitk

    _check_information(sitk, path)
    image = sitk.ReadImage(str(path))
    dimension = image.GetDimension()
    vector = image.GetNumberOfComponentsPerPixel() > 1
    affine = _affine(dimension, image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    array = sitk.GetArrayFromImage(image)  # (z, y, x[, c]); a copy, so the ITK buffer can go now
    del image
    spatial = array.ndim - (1 if vector else 0)
    order = tuple(reversed(range(spatial))) + ((spatial,) if vector else ())
    # (x, y, z) is a Fortran-ordered view of the (z, y, x) buffer, as nibabel's arrays are: no copy
    array = array.transpose(order)
    if vector:
        array = np.ascontiguousarray(array)
    if dimension == 2:
        array = array[:, :, None, ...]
    meta = {"format": Path(path).suffix.lstrip(".").lower()}
    return Volume(array, affine, meta=meta)


def write_itk(volume: Volume, path: Path) -> None:
    """Write NRRD/MHA/MHD (compressed); the caller makes it atomic (an .mhd also writes a .zraw beside it)."""
    import SimpleITK as sitk

    if not is_orthogonal(volume.affine):
        raise InputError(path, "this grid is sheared (e.g. gantry tilt); ITK formats cannot store it, write NIfTI instead")
    spacing, origin, direction = lps_from_affine(volume.affine)
    array = volume.array
    vector = array.ndim == 4
    order = (2, 1, 0, 3) if vector else (2, 1, 0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(order)), isVector=vector)
    image.SetSpacing([float(v) for v in spacing])
    image.SetOrigin([float(v) for v in origin])
    image.SetDirection([float(v) for v in direction.reshape(-1)])
    sitk.WriteImage(image, str(path), useCompression=True)

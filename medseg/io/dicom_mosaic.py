"""Siemens MOSAIC: one DICOM image that tiles all slices of an EPI volume, unpacked into 3D.

Layout (checked against dcm2niix output in dicom_qa_ts): the mosaic is an m x m grid of tiles,
m = ceil(sqrt(NumberOfImagesInMosaic)); slice k is the tile at grid row k // m, column k % m.
Each tile keeps the image plane of the mosaic (same row/column directions and pixel spacing).

Geometry: ImagePositionPatient of a mosaic is the corner of the *whole* mosaic, as if it were one
big image, so the first tile's true position is that corner moved by half the size difference
between mosaic and tile along rows and columns (what dcm2niix and nibabel do). Slices are
SpacingBetweenSlices apart along the slice normal; the CSA header's SliceNormalVector tells whether
slice 0 is at the low or high end of the cross product of the orientation vectors.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pydicom

from medseg.errors import InputError
from medseg.io.dicom_series import (
    check_pixel_format,
    decode_pixels,
    plane_geometry,
    rescale_of,
    rescaled_stack,
    series_meta,
    transfer_syntax,
)
from medseg.io.geometry import affine_from_lps
from medseg.io.volume import Volume

log = logging.getLogger(__name__)

_SIEMENS_MR_HEADER = "SIEMENS MR HEADER"


def is_mosaic(ds: pydicom.Dataset) -> bool:
    image_type = ds.get("ImageType") or []
    if isinstance(image_type, str):
        image_type = image_type.split("\\")
    return any(str(value).strip().upper() == "MOSAIC" for value in image_type)


def _csa_header(ds: pydicom.Dataset) -> dict | None:
    with warnings.catch_warnings():  # nibabel.nicom warns on import that it is experimental
        warnings.simplefilter("ignore")
        from nibabel.nicom import csareader
    try:
        return csareader.get_csa_header(ds, "image")
    except Exception as error:  # absent or malformed CSA header: fall back to plain DICOM tags
        log.debug("no usable CSA image header: %s", error)
        return None


def _csa_value(csa: dict | None, name: str):
    if not csa:
        return None
    try:
        items = csa["tags"][name]["items"]
    except (KeyError, TypeError):
        return None
    return items or None


def mosaic_tile_count(ds: pydicom.Dataset, csa: dict | None = None) -> int | None:
    """NumberOfImagesInMosaic from private tag (0019,xx0A), else from the CSA header."""
    try:
        value = ds.private_block(0x0019, _SIEMENS_MR_HEADER)[0x0A].value
        if isinstance(value, bytes):  # VR UN in files written without the private dictionary
            little = getattr(ds, "original_encoding", (None, True))[1] is not False
            value = int.from_bytes(value[:2], "little" if little else "big")
        if int(value) > 0:
            return int(value)
    except (KeyError, TypeError, ValueError):
        pass
    items = _csa_value(csa if csa is not None else _csa_header(ds), "NumberOfImagesInMosaic")
    return int(items[0]) if items else None


def _slice_step(ds: pydicom.Dataset, path: Path) -> tuple[float, str]:
    for tag in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(tag)
        if value not in (None, "") and float(value) > 0:
            if tag == "SliceThickness":
                log.warning("%s: mosaic without SpacingBetweenSlices; using SliceThickness %.4g mm", path, float(value))
            return float(value), tag
    raise InputError(path, "mosaic has neither SpacingBetweenSlices nor SliceThickness: slice spacing unknown")


def volume_from_mosaic(path: Path, ds: pydicom.Dataset) -> Volume:
    """Unpack one mosaic file into a (column, row, slice) Volume with dcm2niix-compatible geometry."""
    check_pixel_format(ds, path)
    csa = _csa_header(ds)
    count = mosaic_tile_count(ds, csa)
    if not count:
        raise InputError(path, "Siemens MOSAIC without NumberOfImagesInMosaic (0019,100A) or CSA header: cannot unpack the tiles")
    grid = math.ceil(math.sqrt(count))
    rows, columns = int(ds.Rows), int(ds.Columns)
    if rows % grid or columns % grid:
        raise InputError(path, f"mosaic of {rows}x{columns} pixels cannot hold a {grid}x{grid} grid of {count} tiles")
    tile_rows, tile_columns = rows // grid, columns // grid
    pixels = decode_pixels(ds, path)
    if pixels.shape != (rows, columns):
        raise InputError(path, f"mosaic decoded to shape {pixels.shape}, expected ({rows}, {columns})")
    tiles = pixels.reshape(grid, tile_rows, grid, tile_columns).transpose(0, 2, 1, 3).reshape(grid * grid, tile_rows, tile_columns)
    slope, intercept = rescale_of(ds)
    array = rescaled_stack(list(tiles[:count]), [slope] * count, [intercept] * count)

    row, column, normal, pixel_spacing = plane_geometry(ds, path)
    csa_normal = _csa_value(csa, "SliceNormalVector")
    if csa_normal and len(csa_normal) == 3 and float(np.dot(csa_normal, normal)) < 0:
        normal = -normal  # tiles run against row x column: the affine follows the tile order
    ipp = ds.get("ImagePositionPatient")
    if ipp is None or len(ipp) != 3:
        raise InputError(path, "mosaic has no valid ImagePositionPatient: cannot place it in world space")
    corner = np.asarray([float(v) for v in ipp])
    origin = corner + row * pixel_spacing[1] * (columns - tile_columns) / 2 + column * pixel_spacing[0] * (rows - tile_rows) / 2
    step, step_source = _slice_step(ds, path)
    affine = affine_from_lps((pixel_spacing[1], pixel_spacing[0], step), origin, np.column_stack([row, column, normal]))

    meta = series_meta(ds, [transfer_syntax(ds)], count)
    meta.update({"mosaic": True, "mosaic_tiles": count, "slice_spacing_source": step_source})
    log.debug("unpacked mosaic %s: %d tiles of %dx%d", path, count, tile_rows, tile_columns)
    return Volume(array, affine, "image", meta)

"""NRRD and MetaImage (.mha/.mhd) through SimpleITK; ITK works in LPS, so geometry goes through
:mod:`medseg.io.geometry` on the way in and out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medseg.errors import InputError
from medseg.io.geometry import affine_from_lps, is_orthogonal, lps_from_affine
from medseg.io.volume import Volume

ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def read_itk(path: Path) -> Volume:
    image = sitk.ReadImage(str(path))
    dimension = image.GetDimension()
    if dimension not in (2, 3):
        raise InputError(path, f"has {dimension} spatial dimensions; medseg reads 2D or 3D images")
    array = sitk.GetArrayFromImage(image)  # (z, y, x[, c]) -> (x, y, z[, c])
    vector = image.GetNumberOfComponentsPerPixel() > 1
    spatial = array.ndim - (1 if vector else 0)
    order = tuple(reversed(range(spatial))) + ((spatial,) if vector else ())
    array = np.ascontiguousarray(array.transpose(order))
    spacing = np.ones(3)
    origin = np.zeros(3)
    direction = np.eye(3)
    spacing[:dimension] = image.GetSpacing()
    origin[:dimension] = image.GetOrigin()
    direction[:dimension, :dimension] = np.asarray(image.GetDirection()).reshape(dimension, dimension)
    if dimension == 2:
        array = array[:, :, None, ...]
    meta = {"format": Path(path).suffix.lstrip(".").lower()}
    return Volume(array, affine_from_lps(spacing, origin, direction), meta=meta)


def write_itk(volume: Volume, path: Path) -> None:
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

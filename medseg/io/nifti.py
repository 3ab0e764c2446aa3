"""NIfTI-1/2 reading and writing through nibabel, keeping qform/sform exactly."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.errors import InputError
from medseg.io.geometry import is_orthogonal
from medseg.io.volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _squeeze_to_channels_last(array: np.ndarray, path: Path) -> np.ndarray:
    """(x, y) -> (x, y, 1); (x, y, z, 1) -> (x, y, z); (x, y, z, 1, c) -> (x, y, z, c)."""
    if array.ndim == 2:
        return array[:, :, None]
    extra = [n for n in array.shape[3:] if n != 1]
    if len(extra) > 1:
        raise InputError(path, f"has shape {array.shape}; medseg reads 3D volumes, optionally with one channel axis")
    return array.reshape(array.shape[:3] + tuple(extra))


def read_nifti(path: Path) -> Volume:
    """Read a NIfTI file; the affine is nibabel's choice (sform if its code > 0, else qform)."""
    image = nib.load(str(path))
    array = np.asanyarray(image.dataobj)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    array = _squeeze_to_channels_last(array, path)
    header = image.header
    qform, qform_code = image.get_qform(coded=True)
    sform, sform_code = image.get_sform(coded=True)
    meta = {
        "format": "nifti",
        "nifti_qform_code": int(header["qform_code"]),
        "nifti_sform_code": int(header["sform_code"]),
        "nifti_qform": None if qform is None else np.asarray(qform, dtype=float),
        "nifti_sform": None if sform is None else np.asarray(sform, dtype=float),
    }
    return Volume(array, np.asarray(image.affine, dtype=float), meta=meta)


def write_nifti(volume: Volume, path: Path) -> None:
    """Write ``volume``; when it still carries its source's qform/sform, write those back unchanged."""
    image = nib.Nifti1Image(volume.array, volume.affine)
    meta = volume.meta
    sform, qform = meta.get("nifti_sform"), meta.get("nifti_qform")
    source_affine = sform if sform is not None else qform
    if source_affine is not None and np.allclose(source_affine, volume.affine, atol=1e-6):
        image.set_sform(sform, code=meta.get("nifti_sform_code", 0) if sform is not None else 0)
        image.set_qform(qform, code=meta.get("nifti_qform_code", 0) if qform is not None else 0)
    else:
        image.set_sform(volume.affine, code=1)
        if is_orthogonal(volume.affine):
            image.set_qform(volume.affine, code=1)
        else:  # a sheared grid (gantry tilt) has no quaternion form; the sform alone is exact
            image.set_qform(None, code=0)
    image.header.set_xyzt_units("mm", "sec")
    image.set_data_dtype(volume.array.dtype)
    nib.save(image, str(path))

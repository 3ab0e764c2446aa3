"""Write a 3D Volume as a classic single-frame DICOM series (CT or MR Image Storage) with pydicom.

Used by ``medseg demo`` and the tests to produce DICOM input with known geometry. The files carry
no patient identifiers (PatientName ``ANONYMOUS^``, PatientID ``medseg-synthetic``, no dates) and
fresh UIDs. Slice k of the volume becomes file ``slice_<k>.dcm`` with its rows = array axis j and
columns = array axis i, so :func:`medseg.io.dicom.read_dicom_series` gives back the same array and
affine for any right-handed grid (the only kind DICOM stacks can express: the reader orders slices
along row x column). A left-handed grid comes back with its slice axis reversed: the same voxels at
the same world points, indexed the other way.

``slice_origins`` places each slice explicitly (world RAS position of its first voxel), which is
how tests build gantry-tilted or unevenly spaced series: the affine then only gives the in-plane
axes and spacing, and the slice normal (row x column).

Values are stored as 16-bit integers with RescaleSlope/Intercept; integer-valued data round-trip
exactly, non-integer data are quantised to the slope (the worst error is logged).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid
from pydicom.valuerep import format_number_as_ds

from medseg.errors import InputError
from medseg.io.atomic import atomic_path
from medseg.io.geometry import is_orthogonal, lps_from_affine
from medseg.io.dicom_files import is_dicom_file
from medseg.io.volume import Volume

log = logging.getLogger(__name__)

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
}
_OUR_FILES = re.compile(r"^slice_\d{4,}\.dcm$")


def _ds(values) -> list[str]:
    """Decimal strings within DICOM's 16-character limit, as precise as that allows."""
    return [format_number_as_ds(float(v) + 0.0) for v in values]


def _storage(array: np.ndarray, slope: float | None, intercept: float, folder: Path) -> tuple[np.ndarray, int, float]:
    """Stored 16-bit values, their PixelRepresentation and the slope (value = stored * slope + intercept)."""
    values = np.asarray(array, dtype=np.float64)
    if not np.isfinite(values).all():
        raise InputError(folder, "volume has NaN/inf voxels, which DICOM integer pixels cannot store")
    low, high = (float(values.min()) - intercept, float(values.max()) - intercept) if values.size else (0.0, 0.0)
    if slope is None:
        fits = (0 <= low and high <= 65535) or (-32768 <= low and high <= 32767)
        exact = bool(np.all(values == np.round(values))) and float(intercept).is_integer()
        # Spread non-integer or too wide data over the int16 codes; lossy, reported below.
        slope = 1.0 if exact and fits else max(abs(low), abs(high), 1e-3) / 32000.0
    stored = np.round((values - intercept) / slope)
    error = float(np.abs(stored * slope + intercept - values).max()) if values.size else 0.0
    if error > 0:
        log.warning("DICOM storage quantises values (slope %g): worst error %.3g", slope, error)
    low, high = (stored.min(), stored.max()) if stored.size else (0, 0)
    if low >= 0 and high <= 65535:
        return stored.astype("<u2"), 0, float(slope)
    if low >= -32768 and high <= 32767:
        return stored.astype("<i2"), 1, float(slope)
    raise InputError(folder, f"stored values {low:g}..{high:g} do not fit 16 bits; choose rescale_slope/rescale_intercept")


def _prepare_folder(folder: Path, overwrite: bool) -> list[Path]:
    """Existing medseg-written slices (to replace); refuse to mix our series with other DICOM files."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_dicom_file(p)]
    ours = [p for p in existing if _OUR_FILES.match(p.name)]
    foreign = [p for p in existing if not _OUR_FILES.match(p.name)]
    if foreign or (ours and not overwrite):
        what = f"{len(existing)} DICOM file(s)"
        hint = "pass overwrite=True to replace a series medseg wrote" if not foreign else "use an empty folder"
        raise InputError(folder, f"already holds {what}; a second series there would mix with them ({hint})")
    return ours


def write_dicom_series(
    volume: Volume,
    folder: str | Path,
    *,
    modality: str = "CT",
    series_description: str = "medseg synthetic series",
    rescale_intercept: float | None = None,
    rescale_slope: float | None = None,
    series_number: int = 1,
    overwrite: bool = False,
    slice_origins=None,
) -> list[Path]:
    """Write ``volume`` as one DICOM file per slice in ``folder``; return the paths in slice order.

    ``rescale_intercept`` defaults to -1024 for CT (HU -1024 stored as 0) and 0 for MR;
    ``rescale_slope`` defaults to 1 for integer data that fit 16 bits, else to a slope covering
    the value range. ``slice_origins`` (one RAS point per slice) overrides where each slice lies.
    Each file is written atomically.
    """
    folder = Path(folder)
    modality = modality.upper()
    if modality not in SOP_CLASSES:
        raise ValueError(f"modality must be one of {', '.join(SOP_CLASSES)}, got {modality!r}")
    if volume.array.ndim != 3:
        raise InputError(folder, f"can only write a 3D volume as a DICOM series, got shape {volume.array.shape}")
    if not is_orthogonal(volume.affine):
        raise InputError(folder, "cannot write a sheared grid (e.g. gantry tilt) as a DICOM series: slices must stack along their normal")
    positions = _slice_positions(volume, slice_origins, folder)
    intercept = float(rescale_intercept if rescale_intercept is not None else (-1024.0 if modality == "CT" else 0.0))
    stored, representation, slope = _storage(volume.array, rescale_slope, intercept, folder)

    spacing, _, direction = lps_from_affine(volume.affine)
    row, column = direction[:, 0], direction[:, 1]
    normal = np.cross(row, column)
    columns, rows, count = volume.shape
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    stale = _prepare_folder(folder, overwrite)
    width = max(4, len(str(count - 1)))

    written: list[Path] = []
    for k in range(count):
        position = positions[k]
        ds = _slice_dataset(modality, series_description, series_number, study_uid, series_uid, frame_uid)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = _ds(position)
        ds.ImageOrientationPatient = _ds(np.concatenate([row, column]))
        ds.SliceLocation = _ds([position @ normal])[0]
        ds.PixelSpacing = _ds([spacing[1], spacing[0]])  # DICOM order: between rows, between columns
        ds.SliceThickness = _ds([spacing[2]])[0]
        ds.SpacingBetweenSlices = _ds([spacing[2]])[0]
        ds.Rows, ds.Columns = rows, columns
        ds.PixelRepresentation = representation
        ds.RescaleIntercept = _ds([intercept])[0]
        ds.RescaleSlope = _ds([slope])[0]
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        path = folder / f"slice_{k:0{width}d}.dcm"
        with atomic_path(path) as temporary:
            ds.save_as(temporary, enforce_file_format=True)
        written.append(path)
    for path in stale:
        if path not in written:
            path.unlink()
    log.debug("wrote %d-slice %s DICOM series to %s", count, modality, folder)
    return written


def _slice_positions(volume: Volume, slice_origins, folder: Path) -> np.ndarray:
    """LPS ImagePositionPatient of every slice: along the affine's slice axis, or the given RAS origins."""
    if slice_origins is None:
        spacing, origin, direction = lps_from_affine(volume.affine)
        return origin + np.arange(volume.shape[2])[:, None] * spacing[2] * direction[:, 2]
    origins = np.asarray(slice_origins, dtype=float)
    if origins.shape != (volume.shape[2], 3):
        raise InputError(folder, f"slice_origins must be one RAS point per slice ({volume.shape[2]}, 3), got {origins.shape}")
    placed = np.array(volume.affine, dtype=float)
    positions = []
    for point in origins:  # the LPS conversion belongs to geometry: move the affine's origin and ask it
        placed[:3, 3] = point
        positions.append(lps_from_affine(placed)[1])
    return np.asarray(positions)


def _slice_dataset(modality: str, description: str, series_number: int, study_uid: str, series_uid: str, frame_uid: str) -> pydicom.Dataset:
    """Header shared by every slice: SOP class, UIDs and anonymous patient/study modules."""
    instance_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.SOPInstanceUID = instance_uid
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.Modality = modality
    ds.Manufacturer = "medseg"
    ds.SeriesDescription = description
    ds.PatientName = "ANONYMOUS^"
    ds.PatientID = "medseg-synthetic"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    if modality == "CT":
        ds.RescaleType = "HU"
    return ds

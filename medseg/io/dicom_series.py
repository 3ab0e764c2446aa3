"""Stack classic single-frame DICOM slices into one Volume, refusing anything that is not a regular grid.

Why pydicom + pylibjpeg (and not SimpleITK/GDCM) decodes the pixels: one decoder path for every
transfer syntax (raw, big-endian, RLE via pydicom; JPEG lossless, JPEG-LS, JPEG 2000 via the
pylibjpeg plugins), and pydicom hands back the *stored* values, so RescaleSlope/Intercept, sorting,
spacing and the gap/tilt checks below stay under our control. SimpleITK's series reader applies the
rescale itself, sorts with its own rules and silently averages uneven spacing.

Geometry: array axes (i, j, k) = (column, row, slice), i.e. each slice's ``pixel_array.T``, stacked
along the slice normal ``row_direction x column_direction`` in increasing position. The LPS affine
columns are row_direction * PixelSpacing[1], column_direction * PixelSpacing[0] and
normal * step (step measured from ImagePositionPatient, never SliceThickness); the origin is the
first sorted slice's ImagePositionPatient. :func:`medseg.io.geometry.affine_from_lps` turns that
into medseg's RAS affine.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom

from medseg.errors import InputError
from medseg.io.geometry import affine_from_lps
from medseg.io.volume import Volume

log = logging.getLogger(__name__)

# Positions closer than this along the normal are the same slice (several volumes in one series).
DUPLICATE_TOLERANCE_MM = 0.01
# Tags that usually tell apart volumes sharing slice positions, named in the "duplicates" error.
_VOLUME_TAGS = ("EchoNumbers", "EchoTime", "TemporalPositionIdentifier", "TriggerTime", "AcquisitionNumber", "DiffusionBValue", "ImageType")


def spacing_tolerance(step: float) -> float:
    """Largest deviation (mm) from a uniform slice grid still treated as rounding noise."""
    return max(0.01, 0.02 * abs(step))


def _fmt(value: float) -> str:
    """Millimetres for messages: 3 decimals at most, no trailing zeros (e.g. 103.02, 1.25)."""
    text = f"{float(value):.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def transfer_syntax(ds: pydicom.Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""


def describe_syntax(uid: str) -> str:
    try:
        name = pydicom.uid.UID(uid).name
    except Exception:  # malformed UID strings
        name = ""
    return f"{name} ({uid})" if name and name != uid else uid or "unknown transfer syntax"


def check_pixel_format(ds: pydicom.Dataset, path: Path) -> None:
    """Refuse images medseg cannot treat as one grey value per voxel."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        sop = ds.get("SOPClassUID", "")
        kind = getattr(sop, "name", str(sop)) if sop else "unknown SOP class"
        raise InputError(path, f"DICOM object has no pixel data ({kind})")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if samples != 1 or not photometric.startswith("MONOCHROME"):
        raise InputError(
            path, f"colour DICOM image ({photometric}, {samples} samples per pixel) is not supported: medseg needs greyscale CT/MR"
        )


def decode_pixels(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    """Stored pixel values (rows, columns) in native byte order, sign already applied by pydicom."""
    try:
        pixels = ds.pixel_array
    except Exception as error:  # missing plugin, corrupt stream, truncated file...
        detail = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise InputError(path, f"cannot decode pixel data in {describe_syntax(transfer_syntax(ds))}: {detail}") from error
    pixels = np.asarray(pixels)
    if not pixels.dtype.isnative:
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    return pixels


def rescale_of(ds: pydicom.Dataset) -> tuple[float, float]:
    slope = ds.get("RescaleSlope", None)
    intercept = ds.get("RescaleIntercept", None)
    slope = 1.0 if slope in (None, "") else float(slope)
    intercept = 0.0 if intercept in (None, "") else float(intercept)
    return slope, intercept


def rescaled_stack(slices: list[np.ndarray], slopes: list[float], intercepts: list[float]) -> np.ndarray:
    """(column, row, slice) array of ``stored * slope + intercept`` per slice.

    int16 when every slope is 1, every intercept an integer and the result fits (CT in HU),
    float32 otherwise (float32 stores every 16-bit integer exactly).
    """
    rows, columns = slices[0].shape
    shape = (columns, rows, len(slices))
    integer = all(s == 1.0 for s in slopes) and all(float(b).is_integer() for b in intercepts)
    integer = integer and all(np.issubdtype(p.dtype, np.integer) for p in slices)
    if integer:
        low = min(int(p.min()) + int(b) for p, b in zip(slices, intercepts))
        high = max(int(p.max()) + int(b) for p, b in zip(slices, intercepts))
        info = np.iinfo(np.int16)
        if info.min <= low and high <= info.max:
            out = np.empty(shape, dtype=np.int16)
            for k, (pixels, intercept) in enumerate(zip(slices, intercepts)):
                out[:, :, k] = (pixels.astype(np.int32) + int(intercept)).T
            return out
    out = np.empty(shape, dtype=np.float32)
    for k, (pixels, slope, intercept) in enumerate(zip(slices, slopes, intercepts)):
        out[:, :, k] = (pixels.astype(np.float64) * slope + intercept).T
    return out


def plane_geometry(ds: pydicom.Dataset, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unit row direction, column direction, slice normal (LPS) and PixelSpacing (row, column) of a slice."""
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        raise InputError(path, "no valid ImageOrientationPatient: cannot place the image in world space")
    spacing = ds.get("PixelSpacing")
    if spacing is None or len(spacing) != 2 or min(float(v) for v in spacing) <= 0:
        raise InputError(path, "no valid PixelSpacing: cannot place the image in world space")
    iop = np.asarray([float(v) for v in iop])
    row, column = iop[:3], iop[3:]
    for name, vector in (("row", row), ("column", column)):
        if abs(np.linalg.norm(vector) - 1.0) > 1e-2:
            raise InputError(path, f"ImageOrientationPatient {name} vector {np.round(vector, 4).tolist()} is not a unit vector")
    row, column = row / np.linalg.norm(row), column / np.linalg.norm(column)
    if abs(float(row @ column)) > 1e-3:
        raise InputError(path, f"ImageOrientationPatient row and column vectors are not perpendicular (cosine {row @ column:.4f})")
    normal = np.cross(row, column)
    return row, column, normal / np.linalg.norm(normal), np.asarray([float(v) for v in spacing])


def _position(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    ipp = ds.get("ImagePositionPatient")
    if ipp is None or len(ipp) != 3:
        raise InputError(path, "no valid ImagePositionPatient: cannot place the slice in world space")
    return np.asarray([float(v) for v in ipp])


def _check_consistent(datasets: list[pydicom.Dataset], paths: list[Path], source: Path) -> None:
    """All slices must share matrix size, pixel spacing and orientation, or they are not one grid."""

    def rounded(values, digits):
        return None if values is None else tuple(round(float(v), digits) + 0.0 for v in values)

    checks = (
        ("Rows", lambda ds: ds.get("Rows")),
        ("Columns", lambda ds: ds.get("Columns")),
        ("PixelSpacing", lambda ds: rounded(ds.get("PixelSpacing"), 4)),
        ("ImageOrientationPatient", lambda ds: rounded(ds.get("ImageOrientationPatient"), 4)),
        ("PhotometricInterpretation", lambda ds: str(ds.get("PhotometricInterpretation", "")).strip()),
    )
    for name, getter in checks:
        values = [getter(ds) for ds in datasets]
        counts = Counter(values)
        if len(counts) > 1:
            odd = next(p for p, v in zip(paths, values) if v != counts.most_common(1)[0][0])
            listed = ", ".join(f"{value} in {count} file(s)" for value, count in counts.most_common(4))
            raise InputError(source, f"slices differ in {name} ({listed}; e.g. {odd.name}): not one volume (mixed stacks or a localizer?)")


def _check_duplicates(positions: np.ndarray, order: np.ndarray, datasets, source: Path) -> None:
    steps = np.diff(positions[order])
    same = steps < DUPLICATE_TOLERANCE_MM
    if not same.any():
        return
    unique = len(positions) - int(same.sum())
    first = int(np.argmax(same))
    a, b = datasets[order[first]], datasets[order[first + 1]]
    differing = [tag for tag in _VOLUME_TAGS if str(a.get(tag, "")) != str(b.get(tag, ""))]
    hint = f"; they differ in {', '.join(differing)}" if differing else ""
    raise InputError(
        source,
        f"duplicate slice positions: {len(positions)} slices at only {unique} distinct positions (e.g. two at "
        f"{_fmt(positions[order[first]])} mm along the normal{hint}), so the series holds several volumes "
        "(echoes, time points, phases...); split it into one folder per volume",
    )


def _check_spacing(positions: np.ndarray, source: Path) -> float:
    """Uniform slice step (mm) from positions sorted along the normal, or a refusal saying what is wrong."""
    steps = np.diff(positions)
    usual = float(np.sort(steps)[(len(steps) - 1) // 2])  # lower median: robust to a single gap
    tolerance = spacing_tolerance(usual)
    gaps = np.flatnonzero(steps > 1.5 * usual)
    if gaps.size:
        worst = int(gaps[np.argmax(steps[gaps])])
        gap = float(steps[worst])
        multiple = round(gap / usual)
        where = f"between slice positions {_fmt(positions[worst])} and {_fmt(positions[worst + 1])} mm along the normal"
        count = f" ({gaps.size} gaps in all)" if gaps.size > 1 else ""
        if abs(gap - multiple * usual) <= tolerance * multiple:
            raise InputError(
                source,
                f"missing slices: a gap of {_fmt(gap)} mm {where}, about {multiple - 1} missing slice(s) at the usual "
                f"{_fmt(usual)} mm step{count}",
            )
        raise InputError(
            source,
            f"non-uniform slice spacing: a gap of {_fmt(gap)} mm {where}, not a whole multiple of the usual "
            f"{_fmt(usual)} mm step{count}",
        )
    step = float((positions[-1] - positions[0]) / (len(positions) - 1))
    deviation = positions - (positions[0] + step * np.arange(len(positions)))
    worst = int(np.argmax(np.abs(deviation)))
    if abs(deviation[worst]) > spacing_tolerance(step):
        raise InputError(
            source,
            f"non-uniform slice spacing: steps range from {_fmt(steps.min())} to {_fmt(steps.max())} mm; the slice at "
            f"{_fmt(positions[worst])} mm along the normal is {_fmt(abs(deviation[worst]))} mm off a uniform "
            f"{_fmt(step)} mm grid",
        )
    return step


def _check_tilt(ipps: np.ndarray, normal: np.ndarray, pixel_spacing: np.ndarray, tilt_tag, source: Path) -> None:
    """Slice origins must move along the normal; sideways drift is gantry tilt (a sheared grid)."""
    offsets = ipps - ipps[0]
    along = offsets @ normal
    sideways = np.linalg.norm(offsets - np.outer(along, normal), axis=1)
    tolerance = max(0.01, 0.05 * float(pixel_spacing.min()))
    worst = int(np.argmax(sideways))
    if sideways[worst] <= tolerance:
        return
    angle = math.degrees(math.atan2(sideways[-1], abs(along[-1]))) if len(along) > 1 else 0.0
    tag = f", GantryDetectorTilt {float(tilt_tag):g} deg" if tilt_tag not in (None, "") else ""
    raise InputError(
        source,
        f"gantry tilt: slice positions drift {_fmt(sideways[-1])} mm sideways over {_fmt(abs(along[-1]))} mm instead of "
        f"following the slice normal (about {angle:.2f} deg{tag}); tilted (sheared) series are not supported, "
        "resample it with a tilt-correcting converter such as dcm2niix first",
    )


def single_slice_step(ds: pydicom.Dataset) -> tuple[float, str]:
    """A lone slice has no neighbour to measure from: use the nominal spacing, and say so in meta."""
    for tag in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(tag)
        if value not in (None, "") and float(value) > 0:
            return float(value), tag
    return 1.0, "default 1 mm"


def series_meta(ds: pydicom.Dataset, syntaxes: list[str], slice_count: int) -> dict:
    """Non-identifying description of the source (never patient name/ID/dates)."""
    meta: dict = {"format": "dicom", "slice_count": slice_count}
    tags = {"modality": "Modality", "series_description": "SeriesDescription", "series_uid": "SeriesInstanceUID", "manufacturer": "Manufacturer"}
    for key, tag in tags.items():
        value = ds.get(tag)
        if value not in (None, ""):
            meta[key] = str(value).strip()
    meta["transfer_syntax"] = ",".join(sorted(set(s for s in syntaxes if s)))
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric == "MONOCHROME1":
        # Values are kept as stored (after rescale): inverting them would break HU/quantitative
        # meaning. Only the display convention differs (low values shown white), so we record it.
        meta["photometric_interpretation"] = "MONOCHROME1"
        log.warning("MONOCHROME1 image: values kept as stored (display would show low values white)")
    return meta


def volume_from_slices(paths: list[Path], datasets: list[pydicom.Dataset], source: Path) -> Volume:
    """Sort, check and stack single-frame slices of one series into a Volume (see module docstring)."""
    for path, ds in zip(paths, datasets):
        check_pixel_format(ds, path)
    _check_consistent(datasets, paths, source)
    row, column, normal, pixel_spacing = plane_geometry(datasets[0], paths[0])
    ipps = np.stack([_position(ds, path) for path, ds in zip(paths, datasets)])
    positions = ipps @ normal
    order = np.argsort(positions, kind="stable")
    _check_duplicates(positions, order, datasets, source)
    paths = [paths[i] for i in order]
    datasets = [datasets[i] for i in order]
    ipps, positions = ipps[order], positions[order]
    if len(datasets) > 1:
        step = _check_spacing(positions, source)
        _check_tilt(ipps, normal, pixel_spacing, datasets[0].get("GantryDetectorTilt"), source)
        step_source = "ImagePositionPatient"
    else:
        step, step_source = single_slice_step(datasets[0])
    slices = [decode_pixels(ds, path) for path, ds in zip(paths, datasets)]
    for path, pixels in zip(paths, slices):
        if pixels.ndim != 2:
            raise InputError(path, f"expected one 2D frame, decoded an array of shape {pixels.shape}")
    slopes, intercepts = zip(*(rescale_of(ds) for ds in datasets))
    array = rescaled_stack(slices, list(slopes), list(intercepts))
    spacing = (pixel_spacing[1], pixel_spacing[0], step)
    affine = affine_from_lps(spacing, ipps[0], np.column_stack([row, column, normal]))
    meta = series_meta(datasets[0], [transfer_syntax(ds) for ds in datasets], len(datasets))
    meta["slice_spacing_source"] = step_source
    tilt = datasets[0].get("GantryDetectorTilt")
    if tilt not in (None, "") and abs(float(tilt)) > 0.01:
        # Positions follow the normal, so the tilt is already in ImageOrientationPatient: nothing to undo.
        meta["gantry_detector_tilt_deg"] = float(tilt)
    log.debug("stacked %d slices from %s: shape %s, step %.4f mm", len(datasets), source, array.shape, step)
    return Volume(array, affine, "image", meta)

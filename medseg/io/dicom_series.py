"""Stack classic single-frame DICOM slices into one Volume on a regular grid, refusing what cannot be placed.

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

Refused, naming the file(s): a slice without a valid ImagePositionPatient/ImageOrientationPatient
(never skipped), slices that differ in size/spacing/orientation, duplicate positions whose slices
differ (several volumes), and slices too far apart to be one stack. Exact duplicate files are
dropped with a warning. Gantry tilt, uneven spacing and missing slices (a gap of a whole number of
usual steps; both files at the gap are named) are not refused: :mod:`medseg.io.dicom_grid`
resamples them (dcm2niix-style) with a warning that ends up in ``meta['warnings']`` (and so in the
inference sidecar).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom

from medseg.errors import InputError
from medseg.io.dicom_grid import MAX_SLICE_FACTOR, MAX_VOXEL_FACTOR, GridCorrection, Interpolation, RegularGrid, SliceStack, grid_growth, plan_grid, resample_stack
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


def _check_native_length(ds: pydicom.Dataset, path: Path) -> None:
    """Uncompressed pixel data must hold what Rows x Columns x BitsAllocated declare, checked before any decoding."""
    syntax = transfer_syntax(ds)
    data = ds.get("PixelData")
    if not syntax or data is None or pydicom.uid.UID(syntax).is_compressed or ds.get("BitsAllocated") in (None, ""):
        return
    rows, columns, bits = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0), int(ds.BitsAllocated)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    needed = (rows * columns * frames * int(ds.get("SamplesPerPixel", 1) or 1) * bits + 7) // 8
    if len(data) < needed:
        raise InputError(path, f"pixel data holds {len(data)} bytes but Rows x Columns x BitsAllocated ({rows} x {columns} x {bits}) "
                               f"need {needed}: truncated file or wrong image size in the header")


def decode_pixels(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    """Stored pixel values (rows, columns) in native byte order, sign already applied by pydicom."""
    _check_native_length(ds, path)
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


def _numbers(ds: pydicom.Dataset, tag: str, count: int, path: Path, why: str) -> np.ndarray:
    """``count`` finite numbers from a DS element, or a refusal naming the file and the tag."""
    value = ds.get(tag)
    if value is None or value == "":
        raise InputError(path, f"no {tag}: {why}")
    values = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    try:
        numbers = np.asarray([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        numbers = np.asarray([])
    if numbers.size != count or not np.isfinite(numbers).all():
        shown = "\\".join(str(v) for v in values)[:80]
        raise InputError(path, f"{tag} '{shown}' is not {count} finite numbers: {why}")
    return numbers


def plane_geometry(ds: pydicom.Dataset, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unit row direction, column direction, slice normal (LPS) and PixelSpacing (row, column) of a slice."""
    iop = _numbers(ds, "ImageOrientationPatient", 6, path, "cannot place the image in world space")
    spacing = _numbers(ds, "PixelSpacing", 2, path, "cannot place the image in world space")
    if spacing.min() <= 0:
        raise InputError(path, f"PixelSpacing {spacing.tolist()} is not positive: cannot place the image in world space")
    row, column = iop[:3], iop[3:]
    for name, vector in (("row", row), ("column", column)):
        if abs(np.linalg.norm(vector) - 1.0) > 1e-2:
            raise InputError(path, f"ImageOrientationPatient {name} vector {np.round(vector, 4).tolist()} is not a unit vector")
    row, column = row / np.linalg.norm(row), column / np.linalg.norm(column)
    if abs(float(row @ column)) > 1e-3:
        raise InputError(path, f"ImageOrientationPatient row and column vectors are not perpendicular (cosine {row @ column:.4f})")
    normal = np.cross(row, column)
    return row, column, normal / np.linalg.norm(normal), spacing


def _position(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    return _numbers(ds, "ImagePositionPatient", 3, path, "cannot place the slice in world space")


def _named(path: Path, source: Path) -> str:
    """A file as messages name it: relative to the series folder when inside it."""
    try:
        return str(path.relative_to(source)) if path != source else path.name
    except ValueError:
        return path.name


def _check_placed(datasets: list[pydicom.Dataset], paths: list[Path]) -> None:
    """Every slice must carry its own plane and position: one that cannot be placed is refused, never skipped."""
    others = f" (the other {len(paths) - 1} slice(s) of the series have one)" if len(paths) > 1 else ""
    for path, ds in zip(paths, datasets):
        _numbers(ds, "ImageOrientationPatient", 6, path, f"cannot place the slice in world space{others}")
        _numbers(ds, "ImagePositionPatient", 3, path, f"cannot place the slice in world space{others}")


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
            raise InputError(source, f"slices differ in {name} ({listed}; e.g. {_named(odd, source)}): not one volume (mixed stacks or a localizer?)")


#: The encoded pixel data of a slice (path, dataset): by default the dataset's own PixelData.
PixelSource = Callable[[Path, pydicom.Dataset], bytes | None]


def _own_pixel_data(path: Path, ds: pydicom.Dataset) -> bytes | None:
    return ds.get("PixelData")


def _same_slice(a: pydicom.Dataset, b: pydicom.Dataset, ipp_a: np.ndarray, ipp_b: np.ndarray, pixels_a, pixels_b) -> bool:
    """Two files holding the very same slice: same origin, pixel bytes, rescale and volume-telling tags.

    ``pixels_a``/``pixels_b`` are called (only once the cheaper checks pass) for each file's encoded pixel data.
    """
    if np.linalg.norm(ipp_a - ipp_b) > DUPLICATE_TOLERANCE_MM or rescale_of(a) != rescale_of(b):
        return False
    if any(str(a.get(tag, "")) != str(b.get(tag, "")) for tag in _VOLUME_TAGS):
        return False
    data = pixels_a()
    return data is not None and data == pixels_b()


def _drop_identical_duplicates(paths, datasets, ipps, positions, source: Path,
                               pixel_data: PixelSource = _own_pixel_data) -> tuple[list[int], list[str]]:
    """Indices (sorted along the normal) to keep, and notes on dropped copies; differing duplicates are refused."""
    keep, notes = [0], []
    for k in range(1, len(paths)):
        last = keep[-1]
        if positions[k] - positions[last] >= DUPLICATE_TOLERANCE_MM:
            keep.append(k)
            continue
        if _same_slice(datasets[last], datasets[k], ipps[last], ipps[k],
                       lambda: pixel_data(paths[last], datasets[last]), lambda: pixel_data(paths[k], datasets[k])):
            notes.append(f"{_named(paths[k], source)} duplicates {_named(paths[last], source)}")
            continue
        a, b = datasets[last], datasets[k]
        differing = [tag for tag in _VOLUME_TAGS if str(a.get(tag, "")) != str(b.get(tag, ""))]
        hint = f"; they differ in {', '.join(differing)}" if differing else ""
        unique = len(positions) - int((np.diff(positions) < DUPLICATE_TOLERANCE_MM).sum())
        raise InputError(
            source,
            f"duplicate slice positions: {len(positions)} slices at only {unique} distinct positions (e.g. "
            f"{_named(paths[last], source)} and {_named(paths[k], source)} both at {_fmt(positions[k])} mm along the normal"
            f"{hint}), so the series holds several volumes (echoes, time points, phases...); split it into one folder per volume",
        )
    return keep, notes


def _check_gaps(positions: np.ndarray, paths: list[Path], source: Path) -> str | None:
    """Missing slices (a gap that is a whole multiple >= 2 of the usual step), both neighbours named.

    They are interpolated like any uneven spacing (dcm2niix does the same), with a warning; refused only
    when a regular grid at the usual step would need more than MAX_SLICE_FACTOR times the series'
    slices: then the slices are not one stack (e.g. a lone slice far from the others).
    """
    steps = np.diff(positions)
    usual = float(np.sort(steps)[(len(steps) - 1) // 2])  # lower median: robust to a single gap
    tolerance = spacing_tolerance(usual)
    gaps = [k for k in np.flatnonzero(steps > 1.5 * usual)
            if abs(steps[k] - round(steps[k] / usual) * usual) <= tolerance * round(steps[k] / usual)]
    if not gaps:
        return None
    worst = max(gaps, key=lambda k: steps[k])
    gap = float(steps[worst])
    count = f" ({len(gaps)} gaps in all)" if len(gaps) > 1 else ""
    description = (
        f"missing slices: a gap of {_fmt(gap)} mm between slice positions {_fmt(positions[worst])} and "
        f"{_fmt(positions[worst + 1])} mm along the normal (files {_named(paths[worst], source)} and "
        f"{_named(paths[worst + 1], source)}), about {round(gap / usual) - 1} missing slice(s) at the usual "
        f"{_fmt(usual)} mm step{count}"
    )
    needed = round(float(positions[-1] - positions[0]) / usual) + 1
    if needed > MAX_SLICE_FACTOR * len(positions):
        raise InputError(source, f"{description}; too far apart to interpolate: a regular grid at that step would hold "
                                 f"{needed} slices for the series' {len(positions)}")
    return f"{description}; they are interpolated from the slices on either side"


def uniform_step(positions: np.ndarray) -> float | None:
    """The slice step when positions (ascending) lie on a uniform grid within rounding noise, else None."""
    step = float((positions[-1] - positions[0]) / (len(positions) - 1))
    deviation = positions - (positions[0] + step * np.arange(len(positions)))
    return step if np.abs(deviation).max() <= spacing_tolerance(step) else None


def _is_tilted(stack: SliceStack) -> bool:
    """Slice origins must move along the normal; sideways drift beyond rounding is gantry tilt (a sheared grid)."""
    return float(stack.sideways_mm().max()) > max(0.01, 0.05 * float(stack.pixel_spacing.min()))


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


def _sorted_slices(paths, datasets, source: Path) -> tuple[list[Path], list[pydicom.Dataset], SliceStack, list[str]]:
    """Checked slices in increasing position along the normal, their geometry, and notes on dropped copies."""
    _check_placed(datasets, paths)
    for path, ds in zip(paths, datasets):
        check_pixel_format(ds, path)
    _check_consistent(datasets, paths, source)
    return sorted_unique_slices(paths, datasets, source)


def sorted_unique_slices(paths: list[Path], datasets: list[pydicom.Dataset], source: Path,
                         pixel_data: PixelSource = _own_pixel_data) -> tuple[list[Path], list[pydicom.Dataset], SliceStack, list[str]]:
    """Slices in increasing position along the normal with exact duplicate files dropped (a copied file in a PACS
    export), their geometry, and a note per dropped copy; duplicates that differ are refused (several volumes).

    One rule for the reader and for DICOM-SEG output, so a SEG references exactly the slices a mask was read from.
    ``pixel_data(path, dataset)`` gives a slice's encoded pixels when ``datasets`` hold headers only; it is asked
    only for slices that share a position and agree on everything else.
    """
    paths, datasets, stack = sorted_stack(paths, datasets)
    keep, notes = _drop_identical_duplicates(paths, datasets, stack.ipps, stack.positions, source, pixel_data)
    paths, datasets = [paths[i] for i in keep], [datasets[i] for i in keep]
    return paths, datasets, dataclasses.replace(stack, ipps=stack.ipps[keep]), notes


def sorted_stack(paths: list[Path], datasets: list[pydicom.Dataset]) -> tuple[list[Path], list[pydicom.Dataset], SliceStack]:
    """Slices (headers suffice) in increasing position along the normal, and their geometry."""
    row, column, normal, pixel_spacing = plane_geometry(datasets[0], paths[0])
    ipps = np.stack([_position(ds, path) for path, ds in zip(paths, datasets)])
    order = np.argsort(ipps @ normal, kind="stable")
    paths, datasets = [paths[i] for i in order], [datasets[i] for i in order]
    return paths, datasets, SliceStack(row, column, normal, pixel_spacing, ipps[order], int(datasets[0].Columns), int(datasets[0].Rows))


def stack_grid(stack: SliceStack, paths: list[Path], source: Path, tilt_tag: float | None = None
               ) -> tuple[float | None, bool, RegularGrid | None, list[str]]:
    """How a stack of two or more sorted slices becomes a volume: (uniform step or None, tilted, the regular grid
    to resample onto or None when the slices already form one, warnings about missing slices).

    One decision for the reader and for DICOM-SEG output, so a mask read back lands on the same grid.
    """
    gap_note = _check_gaps(stack.positions, paths, source)
    step, tilted = uniform_step(stack.positions), _is_tilted(stack)
    grid = _regular_grid(stack, step, tilted, source, tilt_tag) if tilted or step is None else None
    return step, tilted, grid, [gap_note] if gap_note else []


def _regular_grid(stack: SliceStack, step: float | None, tilted: bool, source: Path, tilt_tag) -> RegularGrid:
    grid = plan_grid(stack, step, tilted)
    growth = grid_growth(stack, grid)
    if growth > MAX_VOXEL_FACTOR:
        raise InputError(
            source,
            f"slice positions do not form one stack: a regular grid covering them would hold {growth:.0f} times the "
            f"series' voxels (positions drift {_fmt(stack.sideways_mm().max())} mm sideways, {stack.tilt_deg():.1f} deg"
            f"{_tag_text(tilt_tag)}; steps {_fmt(np.diff(stack.positions).min())} to {_fmt(np.diff(stack.positions).max())} mm)",
        )
    return grid


def _tag_text(tilt_tag) -> str:
    return f", GantryDetectorTilt {float(tilt_tag):g} deg" if tilt_tag not in (None, "") else ""


def tilt_tag_of(ds: pydicom.Dataset) -> float | None:
    try:
        value = ds.get("GantryDetectorTilt")
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _correction(stack: SliceStack, grid: RegularGrid, step: float | None, tilted: bool, tilt_tag,
                interpolation: Interpolation) -> GridCorrection:
    steps = np.diff(stack.positions)
    return GridCorrection(
        tilt_deg=stack.tilt_deg() if tilted else None, sideways_mm=float(stack.sideways_mm().max()),
        steps_mm=None if step is not None else (float(steps.min()), float(steps.max())), spacing_mm=grid.step,
        source_shape=(stack.columns, stack.rows, len(stack.ipps)), shape=grid.shape, interpolation=interpolation,
        tilt_tag_deg=tilt_tag)


def _stack_pixels(paths: list[Path], datasets: list[pydicom.Dataset]) -> np.ndarray:
    """Decoded, rescaled (column, row, slice) array of the sorted slices."""
    slices = [decode_pixels(ds, path) for path, ds in zip(paths, datasets)]
    for path, pixels in zip(paths, slices):
        if pixels.ndim != 2:
            raise InputError(path, f"expected one 2D frame, decoded an array of shape {pixels.shape}")
    slopes, intercepts = zip(*(rescale_of(ds) for ds in datasets))
    return rescaled_stack(slices, list(slopes), list(intercepts))


def volume_from_slices(paths: list[Path], datasets: list[pydicom.Dataset], source: Path, interpolation: Interpolation = "linear") -> Volume:
    """Sort, check and stack single-frame slices of one series into a Volume (see module docstring).

    Gantry-tilted or unevenly spaced stacks are resampled onto a regular orthogonal grid
    (:mod:`medseg.io.dicom_grid`) with a WARNING; ``meta['warnings']`` says what was done.
    ``interpolation="nearest"`` for label series.
    """
    paths, datasets, stack, notes = _sorted_slices(paths, datasets, source)
    tilt_tag = tilt_tag_of(datasets[0])
    if len(datasets) > 1:  # planned (and refused if absurd) before any pixel is decoded
        step, tilted, grid, gap_notes = stack_grid(stack, paths, source, tilt_tag)
        step_source = "ImagePositionPatient"
    else:
        (step, step_source), tilted, grid, gap_notes = single_slice_step(datasets[0]), False, None, []
    array = _stack_pixels(paths, datasets)
    meta = series_meta(datasets[0], [transfer_syntax(ds) for ds in datasets], len(datasets))
    meta["slice_spacing_source"] = step_source
    if notes:
        notes = [f"dropped {len(notes)} duplicate file(s) holding the same slice as another: {'; '.join(notes[:5])}"]
    notes += gap_notes
    if grid is not None:
        array, affine = resample_stack(array, grid, interpolation), grid.affine
        correction = _correction(stack, grid, step, tilted, tilt_tag, interpolation)
        meta["geometry_correction"] = correction.as_meta()
        notes += correction.messages()
    else:
        spacing = (stack.pixel_spacing[1], stack.pixel_spacing[0], step)
        affine = affine_from_lps(spacing, stack.ipps[0], np.column_stack([stack.row, stack.column, stack.normal]))
    for note in notes:
        log.warning("%s: %s", source, note)
    if notes:
        meta["warnings"] = notes
    if tilt_tag is not None and abs(tilt_tag) > 0.01:
        # Positions following the normal already fold the tilt into ImageOrientationPatient: nothing to undo then.
        meta["gantry_detector_tilt_deg"] = tilt_tag
    log.debug("stacked %d slices from %s: shape %s, step %s mm", len(datasets), source, array.shape, step)
    return Volume(array, affine, "image", meta)

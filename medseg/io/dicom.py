"""DICOM input: find the image series in a folder and read one of them as a Volume.

A folder is walked recursively; only headers are read while listing (fast), pixels only for the
series asked for. Files are DICOM when they carry the Part 10 ``DICM`` marker, whatever their
name; objects without an image plane (SR, RTSTRUCT, DICOMDIR, presentation states...) are skipped.
Series are grouped by SeriesInstanceUID and numbered by (SeriesNumber, description, UID), so an
index is stable for a given folder.

Stacking, checks and geometry of classic slices live in :mod:`medseg.io.dicom_series`, Siemens
mosaics in :mod:`medseg.io.dicom_mosaic`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from medseg.errors import InputError
from medseg.io.dicom_mosaic import is_mosaic, mosaic_tile_count, volume_from_mosaic
from medseg.io.dicom_series import transfer_syntax, volume_from_slices
from medseg.io.readers import is_dicom_file
from medseg.io.volume import Volume

log = logging.getLogger(__name__)

# Only these top-level elements are parsed while listing; everything else is skipped unread.
_HEADER_TAGS = [
    "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality", "Rows", "Columns",
    "ImagePositionPatient", "ImageOrientationPatient", "NumberOfFrames", "ImageType",
    "SharedFunctionalGroupsSequence", (0x0019, 0x0010), (0x0019, 0x100A),
]


@dataclass
class SeriesInfo:
    """One image series found in a folder (no patient identifiers)."""

    uid: str
    index: int
    description: str
    modality: str
    slice_count: int  # image files (instances); a mosaic is one file holding many slices
    rows: int
    columns: int
    files: list[Path] = field(default_factory=list)
    transfer_syntaxes: list[str] = field(default_factory=list)
    series_number: int | None = None
    mosaic_tiles: int | None = None  # slices per file for a Siemens mosaic, else None
    frames: int = 1  # >1: (enhanced) multi-frame objects

    def summary(self) -> str:
        """One-line description used in error messages and logs."""
        if self.mosaic_tiles:
            size = f"{self.slice_count} mosaic file(s) of {self.mosaic_tiles} slices"
        elif self.frames > 1:
            size = f"{self.slice_count} multi-frame file(s) of {self.frames} frames"
        else:
            size = f"{self.slice_count} slice{'s' if self.slice_count != 1 else ''}"
        return f"[{self.index}] {self.uid} '{self.description}' {self.modality or '?'} {size}"


def _is_image_header(ds: pydicom.Dataset) -> bool:
    if "Rows" not in ds or "Columns" not in ds:
        return False
    has_plane = "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds
    return has_plane or "SharedFunctionalGroupsSequence" in ds


def _frames(ds: pydicom.Dataset) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _scan(folder: Path) -> tuple[list[SeriesInfo], dict[str, int]]:
    """Group the image files under ``folder`` by series; count what was skipped and why."""
    groups: dict[str, SeriesInfo] = {}
    skipped = {"not DICOM": 0, "no image plane": 0}
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts) or not path.is_file():
            continue  # hidden files/folders, including our own atomic-write temporaries
        if not is_dicom_file(path):
            skipped["not DICOM"] += 1
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except Exception as error:  # truncated or malformed headers: not usable, say so at debug level
            log.debug("skipping %s: %s", path, error)
            skipped["not DICOM"] += 1
            continue
        if not _is_image_header(ds):
            skipped["no image plane"] += 1
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "").strip() or "(no SeriesInstanceUID)"
        info = groups.get(uid)
        if info is None:
            number = ds.get("SeriesNumber")
            info = groups[uid] = SeriesInfo(
                uid=uid,
                index=-1,
                description=str(ds.get("SeriesDescription", "") or "").strip(),
                modality=str(ds.get("Modality", "") or "").strip(),
                slice_count=0,
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                series_number=int(number) if number not in (None, "") else None,
                mosaic_tiles=mosaic_tile_count(ds, csa={}) if is_mosaic(ds) else None,
                frames=_frames(ds),
            )
        info.files.append(path)
        info.slice_count += 1
        syntax = transfer_syntax(ds)
        if syntax and syntax not in info.transfer_syntaxes:
            info.transfer_syntaxes.append(syntax)
    ordered = sorted(groups.values(), key=lambda s: (s.series_number is None, s.series_number or 0, s.description, s.uid))
    for index, info in enumerate(ordered):
        info.index = index
    return ordered, skipped


def list_dicom_series(folder: str | Path) -> list[SeriesInfo]:
    """Every image series under ``folder`` (recursive), reading headers only; [] when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "is not a folder")
    return _scan(folder)[0]


def _choices(series: list[SeriesInfo]) -> str:
    return "; ".join(info.summary() for info in series)


def _select(series: list[SeriesInfo], choice: str | int | None, folder: Path) -> SeriesInfo:
    if choice is None or (isinstance(choice, str) and not choice.strip()):
        if len(series) == 1:
            return series[0]
        raise InputError(folder, f"{len(series)} series found, pick one with --series INDEX or UID: {_choices(series)}")
    text = str(choice).strip()
    for info in series:
        if info.uid == text:
            return info
    if isinstance(choice, int) or text.isdigit():
        index = int(text)
        if 0 <= index < len(series):
            return series[index]
    raise InputError(folder, f"no series matches '{text}': use an index 0-{len(series) - 1} or a UID: {_choices(series)}")


def select_series(folder: str | Path, series: str | int | None = None) -> SeriesInfo:
    """The one series of ``folder`` that ``series`` (UID or 0-based index; None when there is one) picks."""
    folder = Path(folder)
    found, skipped = _scan(folder)
    if not found:
        seen = ", ".join(f"{count} {why}" for why, count in skipped.items() if count)
        raise InputError(folder, f"no DICOM image series found ({seen or 'folder is empty'})")
    return _select(found, series, folder)


def _read_full(path: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path)
    except Exception as error:  # pydicom raises many types for damaged files
        detail = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise InputError(path, f"not a readable DICOM file ({detail})") from error


def _volume_from_files(paths: list[Path], source: Path) -> Volume:
    datasets = [_read_full(path) for path in paths]
    for path, ds in zip(paths, datasets):
        frames = _frames(ds)
        if frames > 1 or "SharedFunctionalGroupsSequence" in ds:
            raise InputError(
                path,
                f"enhanced/multi-frame DICOM ({frames} frame(s) in one file) is not supported yet; export the series as classic "
                "single-frame images or convert it with dcm2niix",
            )
    if is_mosaic(datasets[0]):
        if len(datasets) > 1:
            raise InputError(
                source,
                f"series holds {len(datasets)} Siemens mosaic files, one volume each (e.g. fMRI time points); read one file at a time",
            )
        return volume_from_mosaic(paths[0], datasets[0])
    return volume_from_slices(paths, datasets, source)


def read_dicom_series(path: str | Path, series: str | int | None = None) -> Volume:
    """Read one DICOM series (folder) or one DICOM file as a Volume in RAS world coordinates.

    ``path`` is a folder (searched recursively; ``series`` picks a series by UID or 0-based index
    when there are several) or a single file, read on its own (a Siemens mosaic or a lone slice).
    Every refusal is an :class:`InputError` that names the problem (missing slices, uneven
    spacing, gantry tilt, several volumes in one series, undecodable transfer syntax...).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    if path.is_file():
        volume = _volume_from_files([path], path)
        if series is not None and str(series).strip() not in ("", "0", volume.meta.get("series_uid", "")):
            raise InputError(path, f"a single file holds one series: [0] {volume.meta.get('series_uid', '?')}; got --series {series}")
        return volume
    info = select_series(path, series)
    log.debug("reading DICOM series %s", info.summary())
    volume = _volume_from_files(info.files, path)
    volume.meta["series_index"] = info.index
    return volume

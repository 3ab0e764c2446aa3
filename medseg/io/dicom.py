"""DICOM input: find the image series in a folder and read one of them as a Volume.

A folder is walked recursively; only headers are read while listing (fast), pixels only for the
series asked for. Files are DICOM when they carry the Part 10 ``DICM`` marker, whatever their
name; objects without an image plane (SR, RTSTRUCT, DICOMDIR, presentation states...) are skipped.
Series are grouped by SeriesInstanceUID and numbered by (SeriesNumber, description, UID), so an
index is stable for a given folder.

Files without the marker (notes, thumbnails, random bytes) are skipped. A file *with* the marker
whose header cannot be parsed is refused when a series is read: it may be one of its slices, and
silently reading the series one slice short is worse than an error. Likewise an image without
ImagePositionPatient/ImageOrientationPatient inside a series of placed slices is refused, naming
it; only series made entirely of such images (secondary captures, screenshots) are skipped. A series
whose slices name two modalities (CT and MR under one SeriesInstanceUID) is refused, naming the
first slice of the second one: stacked, it would be one volume in two kinds of units.

Stacking, checks and geometry of classic slices live in :mod:`medseg.io.dicom_series`, Siemens
mosaics in :mod:`medseg.io.dicom_mosaic`.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from medseg.errors import InputError
from medseg.io.dicom_mosaic import is_mosaic, mosaic_tile_count, volume_from_mosaic
from medseg.io.dicom_files import is_dicom_file
from medseg.io.dicom_grid import Interpolation
from medseg.io.dicom_series import transfer_syntax, volume_from_slices
from medseg.io.volume import Role, Volume

log = logging.getLogger(__name__)

# Only these top-level elements are parsed while listing; everything else is skipped unread.
_HEADER_TAGS = [
    "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality", "Rows", "Columns",
    "ImagePositionPatient", "ImageOrientationPatient", "NumberOfFrames", "ImageType",
    "SharedFunctionalGroupsSequence", "SOPClassUID", (0x0019, 0x0010), (0x0019, 0x100A),
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
    unplaced: int = 0  # images without ImagePositionPatient/ImageOrientationPatient (refused when read)

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
    return "Rows" in ds and "Columns" in ds


def _has_plane(ds: pydicom.Dataset) -> bool:
    has_plane = "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds
    return has_plane or "SharedFunctionalGroupsSequence" in ds


def _image_expected(ds: pydicom.Dataset) -> bool:
    """Whether a header without Rows/Columns should have had them: an Image Storage object, or one that says nothing."""
    meta = getattr(ds, "file_meta", None)
    uid = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    if not uid:
        return True  # no SOP class at all: the header ends early (a truncated file)
    return "Image Storage" in str(getattr(pydicom.uid.UID(str(uid)), "name", ""))


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """pydicom reports invalid values (e.g. a non-numeric DS) with ``warnings.warn`` and its logger; medseg refuses them itself.

    Its logger is silenced here too: importing pydicom (lazily, after the CLI set up logging) resets it to WARNING.
    """
    pydicom_log = logging.getLogger("pydicom")
    level = pydicom_log.level
    pydicom_log.setLevel(max(level, logging.ERROR))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        pydicom_log.setLevel(level)


def _frames(ds: pydicom.Dataset) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


@dataclass
class _Scan:
    series: list[SeriesInfo]
    skipped: dict[str, int]
    unreadable: list[tuple[Path, str]]  # DICOM-marked files whose header does not parse


def _header(path: Path) -> pydicom.Dataset:
    with quiet_pydicom():
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)


def _new_info(ds: pydicom.Dataset, uid: str) -> SeriesInfo:
    number = ds.get("SeriesNumber")
    return SeriesInfo(
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


def _scan(folder: Path) -> _Scan:
    """Group the image files under ``folder`` by series; count what was skipped and why."""
    groups: dict[str, SeriesInfo] = {}
    skipped = {"not DICOM": 0, "no image plane": 0}
    unreadable: list[tuple[Path, str]] = []
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts) or not path.is_file():
            continue  # hidden files/folders, including our own atomic-write temporaries
        if not is_dicom_file(path):
            skipped["not DICOM"] += 1
            continue
        try:
            ds = _header(path)
            image = _is_image_header(ds) and int(ds.Rows) >= 0 and int(ds.Columns) >= 0  # int(): garbage sizes fail here
        except Exception as error:  # truncated or malformed headers: refused if a series is read (see module docstring)
            log.debug("unreadable DICOM header %s: %s", path, error)
            unreadable.append((path, (str(error).strip().splitlines() or [type(error).__name__])[0][:160]))
            continue
        if not image and _image_expected(ds):
            unreadable.append((path, "the header ends before Rows/Columns"))
            continue
        if not image:
            skipped["no image plane"] += 1
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "").strip() or "(no SeriesInstanceUID)"
        if uid not in groups:
            groups[uid] = _new_info(ds, uid)
        info = groups[uid]
        info.files.append(path)
        info.slice_count += 1
        info.unplaced += not _has_plane(ds)
        syntax = transfer_syntax(ds)
        if syntax and syntax not in info.transfer_syntaxes:
            info.transfer_syntaxes.append(syntax)
    for uid in [uid for uid, info in groups.items() if info.unplaced == info.slice_count]:
        skipped["no image plane"] += groups.pop(uid).slice_count  # no placed image at all: not a volume
    ordered = sorted(groups.values(), key=lambda s: (s.series_number is None, s.series_number or 0, s.description, s.uid))
    for index, info in enumerate(ordered):
        info.index = index
    return _Scan(ordered, skipped, unreadable)


def list_dicom_series(folder: str | Path) -> list[SeriesInfo]:
    """Every image series under ``folder`` (recursive), reading headers only; [] when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "is not a folder")
    return _scan(folder).series


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
    scan = _scan(folder)
    if not scan.series:
        seen = ", ".join(f"{count} {why}" for why, count in scan.skipped.items() if count)
        if scan.unreadable:
            seen = ", ".join(filter(None, [seen, f"{len(scan.unreadable)} unreadable DICOM"]))
        raise InputError(folder, f"no DICOM image series found ({seen or 'folder is empty'})")
    if scan.unreadable:
        path, detail = scan.unreadable[0]
        more = f"; {len(scan.unreadable) - 1} more such file(s)" if len(scan.unreadable) > 1 else ""
        raise InputError(path, f"not a readable DICOM file ({detail}); it may be a slice of the series, so the series is not read "
                               f"without it (move it out of the folder to read the rest){more}")
    return _select(scan.series, series, folder)


def _read_full(path: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path)
    except Exception as error:  # pydicom raises many types for damaged files
        detail = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise InputError(path, f"not a readable DICOM file ({detail})") from error


def check_one_modality(paths: list[Path], datasets: list[pydicom.Dataset]) -> None:
    """One series, one modality: CT and MR slices under one SeriesInstanceUID would stack into one volume of mixed units.

    Slices without a Modality say nothing and pass; the first slice naming another modality than the first is refused.
    """
    named = [(path, str(ds.get("Modality", "") or "").strip()) for path, ds in zip(paths, datasets)]
    named = [(path, modality) for path, modality in named if modality]
    odd = next((item for item in named if item[1] != named[0][1]), None)
    if odd is not None:
        tally = ", ".join(f"{count} {modality}" for modality, count in Counter(modality for _, modality in named).items())
        raise InputError(odd[0], f"Modality is {odd[1]} but {named[0][0].name} of the same series is {named[0][1]}: one series "
                                 f"mixes modalities ({tally} slices); split them into separate series")


def _volume_from_files(paths: list[Path], source: Path, interpolation: Interpolation = "linear") -> Volume:
    datasets = [_read_full(path) for path in paths]
    check_one_modality(paths, datasets)
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
    return volume_from_slices(paths, datasets, source, interpolation)


def read_dicom_series(path: str | Path, series: str | int | None = None, role: Role = "image") -> Volume:
    """Read one DICOM series (folder) or one DICOM file as a Volume in RAS world coordinates.

    ``path`` is a folder (searched recursively; ``series`` picks a series by UID or 0-based index
    when there are several) or a single file, read on its own (a Siemens mosaic or a lone slice).
    Every refusal is an :class:`InputError` that names the problem and the file (missing slices,
    a slice without position or orientation, several volumes in one series, undecodable transfer
    syntax...). Gantry tilt and uneven spacing are resampled onto a regular grid (linear for
    ``role="image"``, nearest for ``"label"``), logged and listed in ``meta['warnings']``.
    """
    with quiet_pydicom():  # pydicom parses values lazily: keep its warnings off stderr for the whole read
        return _read_series(Path(path), series, "nearest" if role == "label" else "linear")


def _read_series(path: Path, series: str | int | None, interpolation: Interpolation) -> Volume:
    if not path.exists():
        raise InputError(path, "does not exist")
    if path.is_file():
        volume = _volume_from_files([path], path, interpolation)
        if series is not None and str(series).strip() not in ("", "0", volume.meta.get("series_uid", "")):
            raise InputError(path, f"a single file holds one series: [0] {volume.meta.get('series_uid', '?')}; got --series {series}")
        return volume
    info = select_series(path, series)
    log.debug("reading DICOM series %s", info.summary())
    volume = _volume_from_files(info.files, path, interpolation)
    volume.meta["series_index"] = info.index
    return volume

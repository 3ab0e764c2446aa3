"""What `medseg infer INPUT` means: one file, one DICOM series folder, a folder of cases, or a glob.

A folder whose files are DICOM is one series (one case, named after the folder); any other
folder holds cases: image files (NIfTI, NRRD, MHA...) and DICOM series subfolders. A folder with
neither but DICOM deeper down (a PATIENT/STUDY/SERIES export) is one DICOM input, whose series
``--series`` picks when there are several. Multi-channel
models take nnU-Net-style groups ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``... or one 4D file
per case; a single-channel model also accepts ``<case>_0000.nii.gz`` (the case is then ``<case>``).
Problems that concern one case (a missing channel file) are returned per case, so the other
cases still run.

A model trained on a ``medseg dataset import`` of per-case folders also reads such folders as they
are (a BraTS case folder ``Flair_*``, ``T1c_*``...): its plan keeps the import's file patterns, and
the folder's foreground mask, if the import used one, is applied as it was to the training images.

A channel file that is missing is a problem of that case, unless the channel is named missing on purpose
(``missing``: ``infer.missing_channels``, :mod:`medseg.infer.missing`): such a case is read without it (a file for
it is not read) and the channel comes back as a zero placeholder. A single case named as INPUT whose files cannot
be resolved is an InputError right away.
"""

from __future__ import annotations

import fnmatch
import glob
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.data import naming
from medseg.data.importer import case_files, match_one, zero_outside
from medseg.errors import InputError
from medseg.infer.missing import HINT, complete_channels
from medseg.io.atomic import full_suffix
from medseg.io.readers import READABLE_SUFFIXES, is_dicom_file, read_volume
from medseg.io.volume import Volume
from medseg.schema.plan import CaseFolderLayout

_GLOB_CHARACTERS = set("*?[")
DICOM_PROBE_FILES = 8


@dataclass
class CaseSource:
    """One case to infer: its name and the path(s) of its channel(s)."""

    name: str
    paths: list[Path]
    dicom: bool = False
    problem: str | None = None  # set when the case cannot run (reported, the others go on)
    mask: Path | None = None  # a case folder's foreground mask (zero outside it, as at import)
    missing: tuple[int, ...] = ()  # channels named missing on purpose (not in ``paths``; filled as missing when read)
    problem_at: Path | None = None  # the file or folder the problem is about (default: the folder of ``where``)

    @property
    def where(self) -> Path:
        return self.paths[0]


@dataclass
class Discovery:
    cases: list[CaseSource] = field(default_factory=list)
    single: bool = False  # INPUT named exactly one file or series


def is_dicom_folder(folder: Path) -> bool:
    """A folder with DICOM files directly inside (by ``.dcm`` suffix or the ``DICM`` marker)."""
    probed = 0
    for entry in sorted(folder.iterdir()):
        if not entry.is_file() or naming.is_junk(entry):
            continue
        if entry.suffix.lower() == ".dcm" or is_dicom_file(entry):
            return True
        probed += 1
        if probed >= DICOM_PROBE_FILES:
            return False
    return False


def _has_nested_dicom(folder: Path) -> bool:
    from medseg.io.dicom import list_dicom_series

    return bool(list_dicom_series(folder))


def _image_file(path: Path) -> bool:
    return path.is_file() and not naming.is_junk(path) and (full_suffix(path) in READABLE_SUFFIXES or is_dicom_file(path))


def _group(files: list[Path], in_channels: int, missing: tuple[int, ...] = ()) -> list[CaseSource]:
    """Files -> cases, grouping ``<case>_NNNN`` channel files that start at ``_0000`` (the first channel not ``missing``)."""
    stems = {naming.stem(path): path for path in files}
    expected = [index for index in range(in_channels) if index not in missing]
    anchor = expected[0] if expected else 0
    groups: dict[str, dict[int, Path]] = {}
    for stem, path in stems.items():
        match = naming.CHANNEL_SUFFIX.match(stem)
        if match and f"{match['case']}_{anchor:04d}" in stems:
            groups.setdefault(match["case"], {})[int(match["channel"])] = path
    grouped = {path for channels in groups.values() for path in channels.values()}
    cases = [CaseSource(naming.stem(path), [path]) for path in files if path not in grouped]
    for name, channels in groups.items():
        used = {index: path for index, path in channels.items() if index not in missing}  # files of missing channels: not read
        problem = None
        if sorted(used) != expected:
            found = ", ".join(f"_{index:04d}" for index in sorted(channels))
            problem = f"case {name} has channel files {found}; the model takes {in_channels} channel(s) (_0000" + (
                f" to _{in_channels - 1:04d})" if in_channels > 1 else ")")
            if missing:
                problem += f" with channel(s) {', '.join(map(str, missing))} named missing"
            if in_channels == 1:
                problem += "; if these are separate cases, rename them so they do not end in _NNNN"
            elif set(expected) - set(used):
                problem += f"; {HINT}"
        cases.append(CaseSource(name, [used[index] for index in sorted(used)], problem=problem, missing=missing))
    return sorted(cases, key=lambda case: case.name)


def _layout_case(folder: Path, layout: CaseFolderLayout, files: list[str], missing: tuple[int, ...] = ()) -> CaseSource:
    """The case of a folder laid out as the training import's case folders (problem set when a pattern fails)."""
    try:
        channels = [match_one(folder, files, pattern, f"channel {index} ({pattern})") for index, pattern in enumerate(layout.channels)
                    if index not in missing]
        mask = match_one(folder, files, layout.mask, "mask") if layout.mask else None
    except InputError as error:
        hint = f"; {HINT}" if len(layout.channels) > 1 and "no file matches the channel" in error.problem else ""
        return CaseSource(folder.name, [folder], problem=error.problem + hint, missing=missing, problem_at=folder)
    return CaseSource(folder.name, channels, mask=mask, missing=missing)  # type: ignore[arg-type]


def _matches_a_channel(files: list[str], layout: CaseFolderLayout) -> bool:
    return any(fnmatch.fnmatch(name.lower(), pattern.lower()) for name in files for pattern in layout.channels)


def _layout_cases(path: Path, layout: CaseFolderLayout | None, missing: tuple[int, ...] = ()) -> Discovery | None:
    """``path`` as one case folder (its own files match every channel pattern) or as a folder of case folders.

    A folder whose own files match some channel patterns but not all, and that holds no case folders, is that one
    case with its problem (a channel file missing), not a folder of unrelated images.
    """
    if layout is None:
        return None
    own = [entry.name for entry in sorted(path.iterdir()) if entry.is_file() and not naming.is_junk(entry)]
    case = _layout_case(path, layout, own, missing)
    if case.problem is None:
        return Discovery([case], single=True)
    folders = [entry for entry in sorted(path.iterdir()) if entry.is_dir() and not naming.is_junk(entry) and not is_dicom_folder(entry)]
    cases = [_layout_case(folder, layout, case_files(folder), missing) for folder in folders]
    if any(case.problem is None for case in cases):
        return Discovery(cases)
    return Discovery([case], single=True) if _matches_a_channel(own, layout) else None


def discover_cases(source: str | Path, in_channels: int, layout: CaseFolderLayout | None = None, missing: tuple[int, ...] = ()) -> Discovery:
    """Resolve INPUT into cases; an INPUT that names nothing usable, or one case that cannot run, is an InputError.

    ``layout``: the training import's per-case-folder patterns (from the model's plan), if any. ``missing``: channel
    indices named missing on purpose (:func:`medseg.infer.missing.resolve_missing_channels`).
    """
    discovery = _discover(source, in_channels, layout, tuple(missing))
    for case in discovery.cases:
        case.missing = tuple(missing)
    if discovery.single and len(discovery.cases) == 1 and discovery.cases[0].problem:
        case = discovery.cases[0]
        raise InputError(case.problem_at or case.where.parent, case.problem)  # type: ignore[arg-type]
    return discovery


def _discover(source: str | Path, in_channels: int, layout: CaseFolderLayout | None, missing: tuple[int, ...]) -> Discovery:
    text = str(source)
    path = Path(source)
    if not path.exists() and _GLOB_CHARACTERS & set(text):
        matches = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
        if not matches:
            raise InputError(text, "no files or folders match this pattern")
        files = [m for m in matches if _image_file(m)]
        folders = [CaseSource(m.name, [m], dicom=True) for m in matches if m.is_dir() and is_dicom_folder(m)]
        discovery = Discovery(_group(files, in_channels, missing) + folders)
    elif not path.exists():
        raise InputError(path, "does not exist")
    elif path.is_file():
        match = naming.CHANNEL_SUFFIX.match(naming.stem(path))
        if match and in_channels > 1:  # one channel file named: take its case's other channels too
            siblings = [p for p in sorted(path.parent.iterdir()) if _image_file(p) and naming.CHANNEL_SUFFIX.match(naming.stem(p))
                        and naming.CHANNEL_SUFFIX.match(naming.stem(p))["case"] == match["case"]]
            cases = _group(siblings, in_channels, missing)
        elif match and match["channel"] == "0000":
            cases = [CaseSource(match["case"], [path])]
        else:
            cases = [CaseSource(naming.stem(path), [path])]
        discovery = Discovery(cases, single=True)
    elif is_dicom_folder(path):
        discovery = Discovery([CaseSource(path.name, [path], dicom=True)], single=True)
    elif (laid_out := _layout_cases(path, layout, missing)) is not None:
        discovery = laid_out
    else:
        entries = [entry for entry in sorted(path.iterdir()) if not naming.is_junk(entry)]
        files = [entry for entry in entries if _image_file(entry)]
        folders = [CaseSource(entry.name, [entry], dicom=True) for entry in entries if entry.is_dir() and is_dicom_folder(entry)]
        discovery = Discovery(_group(files, in_channels, missing) + folders)
        if not discovery.cases and _has_nested_dicom(path):  # e.g. PATIENT/STUDY/SERIES exports: one input, --series picks
            discovery = Discovery([CaseSource(path.name, [path], dicom=True)], single=True)
        if not discovery.cases:
            raise InputError(path, "holds no images (NIfTI, NRRD, MHA, DICOM files) and no DICOM series folders")
    names = [case.name for case in discovery.cases]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(text, f"several inputs would be written as the same case: {', '.join(duplicates)}; infer them separately")
    return discovery


def read_case(case: CaseSource, in_channels: int, spatial_dims: int, series: str | None = None,
              missing: tuple[int, ...] | None = None) -> list[Volume]:
    """The case's channels as 3D volumes, checked against what the model takes.

    ``missing`` (default: the case's own): channels named missing on purpose, returned as zero placeholders.
    """
    if case.problem:
        raise InputError(case.problem_at or case.where.parent, case.problem)
    missing = case.missing if missing is None else tuple(missing)
    if case.dicom:
        volumes = [read_volume(case.where, series=series)]
    elif len(case.paths) == 1:
        volumes = read_volume(case.where, allow_channels=True).split_channels()
    else:
        volumes = [read_volume(path) for path in case.paths]
    if case.mask is not None:
        volumes = _masked(volumes, case.mask)
    volumes = complete_channels(volumes, in_channels, missing, case.where)
    if len(volumes) != in_channels:
        hint = " (multi-channel input: one 4D file, or <case>_0000, <case>_0001... files)" if in_channels > 1 else ""
        raise InputError(case.where, f"has {len(volumes)} channel(s); the model takes {in_channels}{hint}")
    shape = volumes[0].shape
    if spatial_dims == 3 and min(shape) == 1:
        raise InputError(case.where, f"is a 2D image (shape {shape}); this model is 3D and needs a volume with several slices")
    return volumes


def _masked(volumes: list[Volume], mask_path: Path) -> list[Volume]:
    """Channels with voxels outside the case's foreground mask set to 0 (the mask must share their grid)."""
    mask = read_volume(mask_path, role="label")
    for volume in volumes:
        if volume.shape != mask.shape or not np.allclose(volume.affine, mask.affine, atol=1e-3):
            raise InputError(mask_path, f"mask grid {mask.shape} differs from the image grid {volume.shape}; it must sample the same voxels")
    inside = np.asarray(mask.array) > 0
    if not inside.any():
        raise InputError(mask_path, "mask is empty")
    return [zero_outside(volume, inside) for volume in volumes]

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
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.data import naming
from medseg.data.importer import case_files, match_one, zero_outside
from medseg.errors import InputError
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


def _group(files: list[Path], in_channels: int) -> list[CaseSource]:
    """Files -> cases, grouping ``<case>_NNNN`` channel files that start at ``_0000``."""
    stems = {naming.stem(path): path for path in files}
    groups: dict[str, dict[int, Path]] = {}
    for stem, path in stems.items():
        match = naming.CHANNEL_SUFFIX.match(stem)
        if match and f"{match['case']}_0000" in stems:
            groups.setdefault(match["case"], {})[int(match["channel"])] = path
    grouped = {path for channels in groups.values() for path in channels.values()}
    cases = [CaseSource(naming.stem(path), [path]) for path in files if path not in grouped]
    for name, channels in groups.items():
        ordered = [channels[index] for index in sorted(channels)]
        problem = None
        if sorted(channels) != list(range(in_channels)):
            found = ", ".join(f"_{index:04d}" for index in sorted(channels))
            problem = f"case {name} has channel files {found}; the model takes {in_channels} channel(s) (_0000" + (
                f" to _{in_channels - 1:04d})" if in_channels > 1 else ")")
            if in_channels == 1:
                problem += "; if these are separate cases, rename them so they do not end in _NNNN"
        cases.append(CaseSource(name, ordered, problem=problem))
    return sorted(cases, key=lambda case: case.name)


def _layout_case(folder: Path, layout: CaseFolderLayout, files: list[str]) -> CaseSource:
    """The case of a folder laid out as the training import's case folders (problem set when a pattern fails)."""
    try:
        channels = [match_one(folder, files, pattern, f"channel {index} ({pattern})") for index, pattern in enumerate(layout.channels)]
        mask = match_one(folder, files, layout.mask, "mask") if layout.mask else None
    except InputError as error:
        return CaseSource(folder.name, [folder], problem=error.problem)
    return CaseSource(folder.name, channels, mask=mask)  # type: ignore[arg-type]


def _layout_cases(path: Path, layout: CaseFolderLayout | None) -> Discovery | None:
    """``path`` as one case folder (its own files match every channel pattern) or as a folder of case folders."""
    if layout is None:
        return None
    own = [entry.name for entry in sorted(path.iterdir()) if entry.is_file() and not naming.is_junk(entry)]
    case = _layout_case(path, layout, own)
    if case.problem is None:
        return Discovery([case], single=True)
    folders = [entry for entry in sorted(path.iterdir()) if entry.is_dir() and not naming.is_junk(entry) and not is_dicom_folder(entry)]
    cases = [_layout_case(folder, layout, case_files(folder)) for folder in folders]
    return Discovery(cases) if any(case.problem is None for case in cases) else None


def discover_cases(source: str | Path, in_channels: int, layout: CaseFolderLayout | None = None) -> Discovery:
    """Resolve INPUT into cases; an INPUT that names nothing usable is an InputError.

    ``layout``: the training import's per-case-folder patterns (from the model's plan), if any.
    """
    text = str(source)
    path = Path(source)
    if not path.exists() and _GLOB_CHARACTERS & set(text):
        matches = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
        if not matches:
            raise InputError(text, "no files or folders match this pattern")
        files = [m for m in matches if _image_file(m)]
        folders = [CaseSource(m.name, [m], dicom=True) for m in matches if m.is_dir() and is_dicom_folder(m)]
        discovery = Discovery(_group(files, in_channels) + folders)
    elif not path.exists():
        raise InputError(path, "does not exist")
    elif path.is_file():
        match = naming.CHANNEL_SUFFIX.match(naming.stem(path))
        if match and in_channels > 1:  # one channel file named: take its case's other channels too
            siblings = [p for p in sorted(path.parent.iterdir()) if _image_file(p) and naming.CHANNEL_SUFFIX.match(naming.stem(p))
                        and naming.CHANNEL_SUFFIX.match(naming.stem(p))["case"] == match["case"]]
            cases = _group(siblings, in_channels)
        elif match and match["channel"] == "0000":
            cases = [CaseSource(match["case"], [path])]
        else:
            cases = [CaseSource(naming.stem(path), [path])]
        discovery = Discovery(cases, single=True)
    elif is_dicom_folder(path):
        discovery = Discovery([CaseSource(path.name, [path], dicom=True)], single=True)
    elif (laid_out := _layout_cases(path, layout)) is not None:
        discovery = laid_out
    else:
        entries = [entry for entry in sorted(path.iterdir()) if not naming.is_junk(entry)]
        files = [entry for entry in entries if _image_file(entry)]
        folders = [CaseSource(entry.name, [entry], dicom=True) for entry in entries if entry.is_dir() and is_dicom_folder(entry)]
        discovery = Discovery(_group(files, in_channels) + folders)
        if not discovery.cases and _has_nested_dicom(path):  # e.g. PATIENT/STUDY/SERIES exports: one input, --series picks
            discovery = Discovery([CaseSource(path.name, [path], dicom=True)], single=True)
        if not discovery.cases:
            raise InputError(path, "holds no images (NIfTI, NRRD, MHA, DICOM files) and no DICOM series folders")
    names = [case.name for case in discovery.cases]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(text, f"several inputs would be written as the same case: {', '.join(duplicates)}; infer them separately")
    return discovery


def read_case(case: CaseSource, in_channels: int, spatial_dims: int, series: str | None = None) -> list[Volume]:
    """The case's channels as 3D volumes, checked against what the model takes."""
    if case.problem:
        raise InputError(case.where.parent, case.problem)
    if case.dicom:
        volumes = [read_volume(case.where, series=series)]
    elif len(case.paths) == 1:
        volumes = read_volume(case.where, allow_channels=True).split_channels()
    else:
        volumes = [read_volume(path) for path in case.paths]
    if case.mask is not None:
        volumes = _masked(volumes, case.mask)
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

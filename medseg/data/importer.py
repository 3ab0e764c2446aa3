"""`medseg dataset import`: per-case folders (BraTS' own layout) or parallel folders -> an nnU-Net v2 dataset.

Two source layouts:

* **case folders** (``layout="case_folders"``): one folder per case, holding one file per channel,
  a label map and optionally a brain/foreground mask, recognised by glob patterns (matched
  case-insensitively against the path inside the case folder, so ``*Flair*`` also finds
  ``VSD.Brain.MR_Flair.123/VSD.Brain.MR_Flair.123.mha``).
* **parallel folders** (``layout="paired"``): one folder per channel and one of label maps, the
  files of a case having the same name in each (``image/X.nii.gz`` + ``nodule_mask/X.nii.gz``);
  the case id is that name without its suffix. Names missing from some folder are refused in one
  line naming them (with ``allow_unlabelled``, a case missing only its label goes to imagesTs/).

The result is
``imagesTr/<case>_0000.nii.gz ...``, ``labelsTr/<case>.nii.gz`` and a ``dataset.json`` with
``channel_names``, ``labels`` (regions in nnU-Net v2 form when given), ``numTraining`` and
``file_ending``.

Files are **linked** when they can be used as they are (a ``.nii.gz`` image, an integer label
map): a symlink to the absolute source path by default, or a hard link. Everything else is
**converted** through :mod:`medseg.io` with the grid kept exactly: other formats, float-stored
label maps (checked and rounded by :func:`medseg.io.readers.to_label_array`, as everywhere), and
images of a case with a mask, whose voxels outside the mask are set to 0 so that cropping to the
nonzero box and nonzero-mask normalisation see the brain, not the air around it (the mask itself is
kept in ``masksTr/`` and recorded in dataset.json, and the plan then normalises inside it).

Every case is matched and its grids compared before anything is written; the dataset is built in a
hidden staging folder and renamed onto DEST at the end, then `medseg dataset check` runs on it.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from medseg.data.import_presets import BRATS_REGIONS, PRESETS
from medseg.data.naming import is_junk, stem
from medseg.data.preprocess import GRID_TOLERANCE_MM
from medseg.errors import ConfigError, InputError
from medseg.io.atomic import full_suffix, make_parent_folder, write_json
from medseg.io.geometry import corner_points
from medseg.io.readers import READABLE_SUFFIXES, read_volume, write_volume
from medseg.io.volume import Volume

log = logging.getLogger(__name__)

LinkMode = Literal["symlink", "hardlink", "copy"]
Layout = Literal["case_folders", "paired"]
FILE_ENDING = ".nii.gz"
MASKS = "masksTr"


@dataclass
class ImportSpec:
    """What to import: channel patterns in channel order, label and mask patterns, labels and regions.

    With ``layout="paired"`` each channel's "pattern" and ``label`` are folders (relative to the
    source folder, or absolute) and there is no mask.
    """

    channels: list[tuple[str, str]]
    label: str
    mask: str | None = None
    label_names: dict[int, str] = field(default_factory=dict)
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    regions_class_order: list[int] | None = None
    link: LinkMode = "symlink"
    name: str | None = None
    preset: str | None = None
    allow_unlabelled: bool = False
    layout: Layout = "case_folders"

    def __post_init__(self) -> None:
        if not self.channels:
            raise ConfigError("no channels: give --preset, at least one --channel NAME=PATTERN, or --images NAME=DIR with --labels DIR")
        if self.layout == "paired" and self.mask:
            raise ConfigError("--mask is a pattern inside case folders; parallel folders (--images/--labels) take no mask")
        names = [name for name, _ in self.channels]
        if len(set(names)) != len(names):
            raise ConfigError(f"channel names must be unique, got {names}")
        if self.regions and (self.regions_class_order is None or len(self.regions_class_order) != len(self.regions)):
            raise ConfigError(f"{len(self.regions)} region(s) need a regions class order with as many entries (--region-order), "
                              f"got {self.regions_class_order}")


@dataclass
class SourceCase:
    case_id: str
    folder: Path
    channels: list[Path]
    label: Path | None
    mask: Path | None


@dataclass
class ImportReport:
    dest: Path
    cases: list[str]
    test_cases: list[str]
    linked: int
    converted: int
    dataset_json: dict


def parse_assignment(text: str, what: str) -> tuple[str, str]:
    """``NAME=VALUE`` -> (NAME, VALUE), both stripped and non-empty."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise ConfigError(f"{what} {text!r}: expected NAME=VALUE")
    return name.strip(), value.strip()


def parse_values(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{what} {text!r}: expected comma-separated label values, e.g. 1,2,4") from None
    if not values or min(values) < 0:
        raise ConfigError(f"{what} {text!r}: expected non-negative label values")
    return values


def resolve_spec(preset: str | None = None, channels: list[str] = (), label: str | None = None, mask: str | None = None,
                 regions: str | None = None, region_defs: list[str] = (), region_order: str | None = None,
                 label_names: list[str] = (), images: list[str] = (), labels: str | None = None, **options) -> ImportSpec:
    """An :class:`ImportSpec` from command-line style options (a preset fills what is not given).

    ``regions``: ``brats`` (the preset's BraTS regions, the default with a BraTS preset),
    ``brats2015``/``brats2021``/``brats2023``, or ``none``. ``region_defs``: ``NAME=1,2,4`` each, with
    ``region_order`` ``2,1,4``. ``mask="none"`` drops a preset's mask. ``images`` (``NAME=DIR`` each)
    and ``labels`` (a folder), or a parallel-folders preset, choose the parallel-folders layout.
    """
    chosen = None
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        chosen = PRESETS[preset]
    if images or labels or (chosen is not None and chosen.layout == "paired"):
        channel_list, label = _paired_sources(chosen, images, labels, {"--channel": channels, "--label": label,
                                                                       "--mask": mask not in (None, "", "none")})
        mask, layout = None, "paired"
    else:
        channel_list = [parse_assignment(item, "--channel") for item in channels] or (list(chosen.channels) if chosen else [])
        label = label or (chosen.label if chosen else None)
        if not label:
            raise ConfigError("no label pattern: give --label PATTERN (or a --preset), or parallel folders with --images NAME=DIR --labels DIR")
        mask, layout = (mask if mask is not None else (chosen.mask if chosen else None)), "case_folders"
    names = dict(chosen.label_names) if chosen else {}
    for item in label_names:
        value, name = parse_assignment(item, "--label-name")
        names[parse_values(value, "--label-name")[0]] = name
    region_map, order = _regions(regions, region_defs, region_order, chosen)
    return ImportSpec(channel_list, label, None if mask in (None, "", "none") else mask, names, region_map, order,
                      preset=preset, layout=layout, **options)


def _paired_sources(preset, images: list[str], labels: str | None, case_folder_options: dict) -> tuple[list[tuple[str, str]], str]:
    """(channel name and folder per channel, label folder) of the parallel-folders layout."""
    wrong = [option for option, value in case_folder_options.items() if value]
    if wrong:
        raise ConfigError(f"{', '.join(wrong)} name files inside case folders; with parallel folders give --images NAME=DIR and --labels DIR")
    for item in images:
        if "=" not in item:
            raise ConfigError(f"--images {item!r}: expected NAME=DIR, e.g. --images CT={item} (the channel name chooses the "
                              f"normalisation: CT gets CT's, other names a per-image z-score)")
    own = preset if preset is not None and preset.layout == "paired" else None
    channel_list = [parse_assignment(item, "--images") for item in images] or (list(own.channels) if own else [])
    label = labels or (own.label if own else None)
    if not channel_list:
        raise ConfigError("--labels needs --images NAME=DIR, one per channel in channel order (e.g. --images CT=image)")
    if not label:
        raise ConfigError("--images needs --labels DIR: the folder of label maps, named as the images")
    return channel_list, label


def _regions(regions: str | None, region_defs, region_order: str | None, preset) -> tuple[dict[str, tuple[int, ...]], list[int] | None]:
    if region_defs:
        if regions not in (None, "custom"):
            raise ConfigError("give either --regions or --region NAME=VALUES, not both")
        defined = dict(parse_assignment(item, "--region") for item in region_defs)
        if region_order is None:
            raise ConfigError("--region needs --region-order: the label each region paints, in order (nnU-Net's regions_class_order)")
        return {name: parse_values(values, "--region") for name, values in defined.items()}, list(parse_values(region_order, "--region-order"))
    choice = regions if regions is not None else ("brats" if preset is not None and preset.regions.regions else "none")
    if choice == "none":
        return {}, None
    if choice == "brats":
        if preset is None:
            raise ConfigError(f"--regions brats needs a --preset, or name the label convention: {', '.join(BRATS_REGIONS)}")
        chosen = preset.regions
    elif choice in BRATS_REGIONS:
        chosen = BRATS_REGIONS[choice]
    else:
        raise ConfigError(f"--regions {choice!r}: expected none, brats, {', '.join(BRATS_REGIONS)}")
    order = list(parse_values(region_order, "--region-order")) if region_order else list(chosen.order)
    return dict(chosen.regions), order


# --- discovery -----------------------------------------------------------------------------------
def case_files(folder: Path) -> list[str]:
    """Readable files under a case folder, as posix paths relative to it (hidden and junk skipped)."""
    found = []
    for directory, subfolders, files in os.walk(folder):
        subfolders[:] = sorted(name for name in subfolders if not is_junk(Path(name)))
        for name in sorted(files):
            path = Path(directory) / name
            if not is_junk(path) and full_suffix(path) in READABLE_SUFFIXES:
                found.append(path.relative_to(folder).as_posix())
    return found


def match_one(folder: Path, files: list[str], pattern: str, what: str, required: bool = True) -> Path | None:
    """The one file of ``files`` matching ``pattern``; several matches, or none when required, refuse."""
    lowered = pattern.lower()
    hits = [name for name in files if fnmatch.fnmatch(name.lower(), lowered)]
    if len(hits) > 1:
        raise InputError(folder, f"{what} pattern {pattern!r} matches {len(hits)} files ({', '.join(hits[:4])}); make the pattern more specific")
    if not hits:
        if required:
            raise InputError(folder, f"no file matches the {what} pattern {pattern!r} (files: {', '.join(files[:6]) or 'none'})")
        return None
    return folder / hits[0]


def discover_cases(src: Path, spec: ImportSpec) -> list[SourceCase]:
    """One :class:`SourceCase` per case folder of ``src``, every pattern matched exactly once."""
    if not src.is_dir():
        raise InputError(src, "is not a folder (expected a folder of case folders)")
    folders = sorted(entry for entry in src.iterdir() if entry.is_dir() and not is_junk(entry))
    if not folders:
        raise InputError(src, "holds no case folders (expected one folder per case, e.g. BraTS2021_00000/)")
    cases = []
    for folder in folders:
        files = case_files(folder)
        channels = [match_one(folder, files, pattern, f"channel {name}") for name, pattern in spec.channels]
        label = match_one(folder, files, spec.label, "label", required=not spec.allow_unlabelled)
        mask = match_one(folder, files, spec.mask, "mask") if spec.mask else None
        used = [path for path in (*channels, label, mask) if path is not None]
        if len(set(used)) != len(used):
            raise InputError(folder, "one file matches two patterns (a channel, the label or the mask); make the patterns distinct")
        cases.append(SourceCase(folder.name, folder, channels, label, mask))
    return cases


def folder_files(folder: Path, option: str) -> dict[str, Path]:
    """The readable files directly in ``folder`` by case name (file name without its suffix)."""
    if not folder.is_dir():
        raise InputError(folder, f"is not a folder ({option} names a folder inside SOURCE, or an absolute path)")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_dir() or is_junk(path) or full_suffix(path) not in READABLE_SUFFIXES:
            continue
        if stem(path) in found:
            raise InputError(path, f"has the same case name as {found[stem(path)].name}; keep one file per case in {folder.name}/")
        found[stem(path)] = path
    if not found:
        raise InputError(folder, f"holds no image files ({', '.join(READABLE_SUFFIXES)})")
    return found


def _name_list(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown}, ... {len(names) - limit} more" if len(names) > limit else shown


def discover_paired(src: Path, spec: ImportSpec) -> list[SourceCase]:
    """One :class:`SourceCase` per file name found in the channel folders and the label folder.

    Names missing from some folder are refused together, in one line; with ``allow_unlabelled`` a
    name in every channel folder but not the label folder is a test case.
    """
    folders = [src / folder for _, folder in spec.channels]
    channel_files = [folder_files(folder, "--images") for folder in folders]
    label_files = folder_files(src / spec.label, "--labels")
    everything = sorted(set(label_files).union(*channel_files))
    gaps = []
    for folder, files in [*zip(folders, channel_files), (src / spec.label, label_files)]:
        missing = [name for name in everything if name not in files]
        if files is label_files and spec.allow_unlabelled:
            missing = [name for name in missing if not all(name in other for other in channel_files)]
        if missing:
            gaps.append(f"{len(missing)} missing from {folder.name}/ ({_name_list(missing)})")
    if gaps:
        raise InputError(src, f"file names do not match across the folders: {'; '.join(gaps)}")
    return [SourceCase(name, folders[0], [files[name] for files in channel_files], label_files.get(name), None) for name in everything]


# --- grids ---------------------------------------------------------------------------------------
def header_grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine from the header alone for NIfTI (other formats are read)."""
    if full_suffix(path) in (".nii", ".nii.gz"):
        import nibabel as nib

        try:
            image = nib.load(str(path))
            shape = tuple(int(n) for n in image.shape)
            affine = np.asarray(image.affine, dtype=float)
        except Exception as error:  # nibabel raises many types for bad headers
            raise InputError(path, f"not a readable NIfTI header ({type(error).__name__}: {error})") from error
    else:
        volume = read_volume(path, allow_channels=True)
        shape, affine = tuple(volume.array.shape), volume.affine
    if len(shape) > 3 and any(n != 1 for n in shape[3:]):
        raise InputError(path, f"is 4D (shape {shape}); dataset import expects one 3D file per channel")
    return tuple(list(shape[:3]) + [1] * (3 - len(shape[:3]))), affine


def check_case_grids(case: SourceCase) -> None:
    """Every channel, the label and the mask sample the same world points as the first channel."""
    first = case.channels[0]
    shape, affine = header_grid(first)
    for path in [*case.channels[1:], case.label, case.mask]:
        if path is None:
            continue
        other_shape, other_affine = header_grid(path)
        if other_shape != shape:
            raise InputError(path, f"shape {other_shape} differs from {first.name}'s {shape} in case {case.case_id}")
        distance = float(np.abs(corner_points(shape, affine) - corner_points(shape, other_affine)).max())
        if distance > GRID_TOLERANCE_MM:
            raise InputError(path, f"grid differs from {first.name}'s in case {case.case_id} (corners up to {distance:.3g} mm apart)")


# --- writing -------------------------------------------------------------------------------------
def _link(source: Path, target: Path, mode: LinkMode) -> None:
    """``target`` becomes ``source``: a symlink to its absolute path, a hard link, or a copy."""
    if mode == "symlink":
        target.symlink_to(source.resolve())
        return
    if mode == "hardlink":
        try:
            os.link(source.resolve(), target)
            return
        except OSError as error:  # another file system, or links not allowed there
            log.warning("%s: cannot hard-link (%s); copying instead", source, error.strerror)
    shutil.copy2(source, target)


def _integer_nifti(path: Path) -> bool:
    """A compressed NIfTI whose voxels are stored as integers without scaling: usable as a label map as it is."""
    if full_suffix(path) != FILE_ENDING:
        return False
    import nibabel as nib

    header = nib.load(str(path)).header
    slope, intercept = header.get_slope_inter()
    return np.issubdtype(header.get_data_dtype(), np.integer) and slope in (None, 1.0) and intercept in (None, 0.0)


def _write_image(source: Path, target: Path, mask: np.ndarray | None, mode: LinkMode) -> bool:
    """Link or convert one channel; True when it was linked."""
    if mask is None and full_suffix(source) == FILE_ENDING:
        _link(source, target, mode)
        return True
    volume = read_volume(source, role="image")
    write_volume(zero_outside(volume, mask) if mask is not None else volume, target)
    return False


def zero_outside(volume: Volume, mask: np.ndarray) -> Volume:
    """The image with every voxel outside ``mask`` set to 0: what the import does and what inference repeats."""
    array = np.array(volume.array, copy=True)
    array[~mask] = 0
    return volume.with_array(array)


def _write_label(source: Path, target: Path, mode: LinkMode) -> bool:
    if _integer_nifti(source):
        _link(source, target, mode)
        return True
    write_volume(read_volume(source, role="label"), target)  # checked and rounded to integers, same grid
    return False


def write_case(case: SourceCase, staging: Path, spec: ImportSpec) -> tuple[int, int]:
    """One case into the staging dataset; returns (files linked, files converted)."""
    images = "imagesTr" if case.label is not None else "imagesTs"
    mask = None
    linked = converted = 0
    if case.mask is not None:
        mask_volume = read_volume(case.mask, role="label")
        mask = np.asarray(mask_volume.array) > 0
        if not mask.any():
            raise InputError(case.mask, f"mask of case {case.case_id} is empty")
        folder = MASKS if case.label is not None else MASKS.replace("Tr", "Ts")
        (staging / folder).mkdir(exist_ok=True)
        write_volume(mask_volume.with_array(mask.astype(np.uint8)), staging / folder / f"{case.case_id}{FILE_ENDING}")
        converted += 1
    for index, source in enumerate(case.channels):
        was_linked = _write_image(source, staging / images / f"{case.case_id}_{index:04d}{FILE_ENDING}", mask, spec.link)
        linked, converted = linked + was_linked, converted + (not was_linked)
    if case.label is not None:
        was_linked = _write_label(case.label, staging / "labelsTr" / f"{case.case_id}{FILE_ENDING}", spec.link)
        linked, converted = linked + was_linked, converted + (not was_linked)
    return linked, converted


def scan_label_values(cases: list[SourceCase]) -> list[int]:
    """Every value found in the label maps (read once each; only when no label names were given)."""
    values: set[int] = set()
    for case in cases:
        if case.label is not None:
            values.update(int(v) for v in np.unique(read_volume(case.label, role="label").array))
    return sorted(values | {0})


def dataset_json(spec: ImportSpec, cases: list[SourceCase], src: Path, dest: Path) -> dict:
    """nnU-Net v2 dataset.json (keys in nnU-Net's order; regions keep their declared order)."""
    names = dict(spec.label_names) or {value: ("background" if value == 0 else f"label_{value}") for value in scan_label_values(cases)}
    names.setdefault(0, "background")
    if spec.regions:
        labels: dict = {"background": 0, **{name: list(values) for name, values in spec.regions.items()}}
        labels.update({name: value for value, name in names.items() if name == "ignore"})
    else:
        labels = {name: value for value, name in sorted(names.items())}
    data = {
        "name": spec.name or dest.name,
        "channel_names": {str(index): name for index, (name, _) in enumerate(spec.channels)},
        "labels": labels,
        "numTraining": sum(case.label is not None for case in cases),
        "file_ending": FILE_ENDING,
    }
    if spec.regions:
        data["regions_class_order"] = list(spec.regions_class_order or [])
    if spec.mask:
        data["foreground_mask"] = {"folder": MASKS, "pattern": spec.mask,
                                   "applied": "image voxels outside the mask were set to 0; normalisation runs inside the mask"}
    # Parallel folders record "images"/"labels", never "channels": those are case-folder patterns that
    # the plan keeps so that `medseg infer` reads a case folder as the import did.
    sources = ({"layout": "paired", "images": {name: folder for name, folder in spec.channels}, "labels": spec.label}
               if spec.layout == "paired" else {"channels": {name: pattern for name, pattern in spec.channels}, "label": spec.label})
    data["medseg_import"] = {"source": str(src.resolve()), "preset": spec.preset, "link": spec.link, **sources,
                             "class_names": {str(value): name for value, name in sorted(names.items())}}
    return data


def _staging_folder(dest: Path) -> Path:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(dest, "already exists and is not empty; import into a new folder")
    make_parent_folder(dest)  # `import SRC data/brats` on a fresh checkout: data/ is made, as `train -o` and `infer -o` do
    staging = dest.parent / f".{dest.name}.importing-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (staging / folder).mkdir(parents=True)
    return staging


def import_dataset(src: str | Path, dest: str | Path, spec: ImportSpec, workers: int = 2) -> ImportReport:
    """Build the nnU-Net v2 dataset ``dest`` from the case folders, or the parallel folders, of ``src`` (module docstring)."""
    src, dest = Path(src), Path(dest)
    cases = discover_paired(src, spec) if spec.layout == "paired" else discover_cases(src, spec)
    if not any(case.label is not None for case in cases):
        raise InputError(src, f"no case folder has a file matching the label pattern {spec.label!r}")
    for case in cases:
        check_case_grids(case)
    data = dataset_json(spec, cases, src, dest)
    staging = _staging_folder(dest)
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            counts = list(pool.map(lambda case: write_case(case, staging, spec), cases))
        if not any((staging / "imagesTs").iterdir()):
            (staging / "imagesTs").rmdir()
        write_json(staging / "dataset.json", data)
        if dest.exists():
            dest.rmdir()
        os.replace(staging, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    linked, converted = sum(c[0] for c in counts), sum(c[1] for c in counts)
    log.info("imported %d case(s) into %s: %d file(s) linked, %d converted", len(cases), dest, linked, converted)
    return ImportReport(dest, [c.case_id for c in cases if c.label is not None], [c.case_id for c in cases if c.label is None],
                        linked, converted, data)

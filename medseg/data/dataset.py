"""Raw dataset layouts (MSD and nnU-Net v2) read into one :class:`DatasetDescription`.

Both layouts keep training images in ``imagesTr/``, label maps in ``labelsTr/`` and unlabelled
images in ``imagesTs/``, described by a ``dataset.json``; they differ in how channels and labels
are declared:

* **MSD**: ``"modality": {"0": "CT"}`` (index -> name) and ``"labels": {"0": "background"}``
  (index -> name); a multi-channel case is one 4D NIfTI (channels last, e.g. BrainTumour); the
  ``training`` list names the files. nnU-Net v1 folders look the same but store channels as
  ``_0000``-suffixed files, which is accepted too.
* **nnU-Net v2**: ``"channel_names": {"0": "T2"}``, ``"labels": {"background": 0, "tumor": 1}``
  (name -> index, or name -> list of indices for region labels), ``"file_ending"``, and one file
  per channel named ``<case>_<XXXX><file_ending>``.

Loading never reads voxels and never fails on a missing case file: :mod:`medseg.data.check` is
the place that reports those. Images may be any format :func:`medseg.io.read_volume` reads,
including a DICOM series folder standing for one case (or one channel).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medseg.data.naming import CHANNEL_SUFFIX, is_junk, stem
from medseg.errors import InputError
from medseg.io.atomic import full_suffix
from medseg.io.label_names import dataset_labels
from medseg.io.readers import READABLE_SUFFIXES, read_volume
from medseg.io.volume import Volume

log = logging.getLogger(__name__)

Format = Literal["msd", "nnunet"]
# nnU-Net channel names that are normalization directives rather than modalities.
_NO_NORM_NAMES = {"nonorm", "none"}
_RESCALE_NAMES = {"rescale_to_0_1", "rgb_to_0_1"}
_MR_WORDS = ("MR", "T1", "T2", "FLAIR", "ADC", "DWI", "PD", "SWI", "BOLD", "DIXON", "PERFUSION")


@dataclass
class Case:
    """One case: image path(s) and, for training cases, the label path.

    ``images`` holds one path per channel, or a single path to a 4D file holding all channels
    (``multichannel_file``). Paths may not exist; checking is a separate step.
    """

    case_id: str
    images: list[Path]
    label: Path | None = None
    multichannel_file: bool = False

    def sources(self) -> list[Path]:
        return list(self.images) + ([self.label] if self.label is not None else [])

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "images": [str(path) for path in self.images],
            "label": None if self.label is None else str(self.label),
            "multichannel_file": self.multichannel_file,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Case:
        label = data.get("label")
        return cls(data["case_id"], [Path(p) for p in data["images"]], Path(label) if label else None, bool(data.get("multichannel_file")))


@dataclass
class DatasetDescription:
    """Everything medseg needs to know about a raw dataset, whatever its layout on disk."""

    name: str
    root: Path
    format: Format
    channel_names: list[str]
    labels: dict[int, str]
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    cases: list[Case] = field(default_factory=list)
    test_cases: list[Case] = field(default_factory=list)
    file_ending: str = ".nii.gz"
    declared_num_training: int | None = None
    regions_class_order: list[int] | None = None  # nnU-Net v2: region i paints this class when its sigmoid > 0.5
    ignore_label: int | None = None  # nnU-Net v2 "ignore": unannotated voxels, never a class
    foreground_mask: bool = False  # images were masked at import (zero outside the brain): normalise inside the nonzero mask
    channel_patterns: list[str] = field(default_factory=list)  # per-case-folder file patterns of an import, in channel order
    mask_pattern: str | None = None  # the import's foreground mask pattern

    @property
    def has_regions(self) -> bool:
        return bool(self.regions)

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def modalities(self) -> list[str]:
        return [modality_of(name) for name in self.channel_names]

    @property
    def label_values(self) -> list[int]:
        """Every integer a label map may contain (plain labels and members of region labels)."""
        values = set(self.labels)
        for members in self.regions.values():
            values.update(members)
        if self.ignore_label is not None:
            values.add(self.ignore_label)
        return sorted(values)

    @property
    def foreground_labels(self) -> list[int]:
        return [value for value in self.label_values if value != 0 and value != self.ignore_label]

    def case(self, case_id: str) -> Case:
        for case in self.cases + self.test_cases:
            if case.case_id == case_id:
                return case
        raise KeyError(case_id)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "channels": [{"index": i, "name": n, "modality": m} for i, (n, m) in enumerate(zip(self.channel_names, self.modalities))],
            "labels": {str(k): v for k, v in sorted(self.labels.items())},
            "regions": {k: list(v) for k, v in self.regions.items()},
            "num_training": len(self.cases),
            "num_test": len(self.test_cases),
        }


def modality_of(channel_name: str) -> str:
    """Map a free-text channel name to ``"CT"``, ``"MR"`` or ``"other"`` (this drives normalization)."""
    upper = channel_name.strip().upper()
    if upper == "CT" or upper.startswith("CT ") or upper.startswith("CT_") or upper.startswith("CT-"):
        return "CT"
    if any(word in upper for word in _MR_WORDS):
        return "MR"
    return "other"


def normalization_directive(channel_name: str) -> str | None:
    """nnU-Net channel names that ask for a specific scheme: ``"none"`` or ``"rescale"``."""
    lower = channel_name.strip().lower()
    if lower in _NO_NORM_NAMES:
        return "none"
    if lower in _RESCALE_NAMES:
        return "rescale"
    return None


def _readable_entry(path: Path) -> bool:
    if is_junk(path):
        return False
    if path.is_dir():
        return True
    return full_suffix(path) in READABLE_SUFFIXES


def _strip_suffix(path: Path) -> str:
    return path.name if path.is_dir() else stem(path)


def _entries(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(entry for entry in folder.iterdir() if _readable_entry(entry))


def _read_json(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise InputError(path, "is a folder, not a JSON file")
    if not path.is_file():
        raise InputError(path.parent, "no dataset.json: expected an MSD or nnU-Net v2 raw dataset folder (imagesTr/, labelsTr/, dataset.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(path, "not valid JSON (not UTF-8 text)") from None
    except (json.JSONDecodeError, RecursionError) as error:
        raise InputError(path, f"not valid JSON ({error})") from error
    except OSError as error:
        raise InputError(path, f"cannot be read ({error.strerror or error})") from error
    if not isinstance(data, dict):
        raise InputError(path, "top level must be a JSON object")
    return data


def detect_format(root: str | Path) -> Format:
    """``"nnunet"`` when dataset.json has ``channel_names``, ``"msd"`` when it has ``modality``."""
    root = Path(root)
    data = _read_json(root / "dataset.json")
    if "channel_names" in data:
        return "nnunet"
    if "modality" in data:
        return "msd"
    raise InputError(root / "dataset.json", "declares neither 'modality' (MSD) nor 'channel_names' (nnU-Net v2)")


def _index_map(data: dict[str, Any], key: str, path: Path) -> dict[int, str]:
    raw = data.get(key)
    if not isinstance(raw, dict) or not raw:
        raise InputError(path, f"'{key}' must be a non-empty mapping")
    try:
        return {int(index): str(name) for index, name in raw.items()}
    except ValueError as error:
        raise InputError(path, f"'{key}' keys must be integer indices, got {sorted(raw)}") from error


def _channels(mapping: dict[int, str], path: Path) -> list[str]:
    if sorted(mapping) != list(range(len(mapping))):
        raise InputError(path, f"channel indices must be 0..{len(mapping) - 1}, got {sorted(mapping)}")
    return [mapping[i] for i in range(len(mapping))]


def _resolve(root: Path, relative: str) -> Path:
    """``root / relative`` normalized, without following symlinks (their names are the case ids)."""
    return Path(os.path.normpath(root / relative.removeprefix("./")))


def _find(folder: Path, stem: str, ending: str | None = None) -> Path | None:
    """``folder/<stem><suffix>`` for any readable suffix (``ending`` first), or a ``<stem>`` folder."""
    for suffix in dict.fromkeys(((ending,) if ending else ()) + READABLE_SUFFIXES):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return folder / stem if (folder / stem).is_dir() else None


def _channel_files(folder: Path, case_id: str, count: int) -> list[Path] | None:
    """``<case>_0000.*`` ... files (or folders) for each channel, if the first one exists."""
    first = _find(folder, f"{case_id}_0000")
    if first is None:
        return None
    ending = full_suffix(first) or None
    found = [first]
    for channel in range(1, count):
        stem = f"{case_id}_{channel:04d}"
        found.append(_find(folder, stem, ending) or folder / f"{stem}{ending or ''}")
    return found


def _label_for(folder: Path, case_id: str, file_ending: str | None = None) -> Path:
    """The label of ``case_id``; a non-existent path when missing, so that check reports it."""
    return _find(folder, case_id, file_ending) or folder / f"{case_id}{file_ending or '.nii.gz'}"


def _msd_case(root: Path, image_ref: str, label_ref: str | None, channels: int, labelled: bool) -> Case:
    image = _resolve(root, image_ref)
    case_id = _strip_suffix(image) if image.exists() else Path(image_ref).name.split(".")[0]
    label = None
    if labelled:
        label = _resolve(root, label_ref) if label_ref else _label_for(root / "labelsTr", case_id)
    if image.exists():
        return Case(case_id, [image], label, multichannel_file=channels > 1 and image.is_file())
    files = _channel_files(image.parent, case_id, channels)  # nnU-Net v1 layout: training list names the case, files carry _0000
    if files:
        return Case(case_id, files, label)
    return Case(case_id, [image], label, multichannel_file=channels > 1)


def _load_msd(root: Path, data: dict[str, Any]) -> DatasetDescription:
    path = root / "dataset.json"
    channels = _channels(_index_map(data, "modality", path), path)
    labels = _index_map(data, "labels", path)
    cases: list[Case] = []
    tests: list[Case] = []
    training = data.get("training")
    if isinstance(training, list) and training:
        for entry in training:
            if not isinstance(entry, dict) or "image" not in entry:
                raise InputError(path, f"'training' entries must be objects with 'image' and 'label', got {entry!r}")
            cases.append(_msd_case(root, str(entry["image"]), entry.get("label"), len(channels), labelled=True))
    else:
        cases = _discover_grouped(root / "imagesTr", root / "labelsTr", len(channels), None)
    test = data.get("test")
    if isinstance(test, list) and test:
        for entry in test:
            reference = entry.get("image") if isinstance(entry, dict) else entry
            tests.append(_msd_case(root, str(reference), None, len(channels), labelled=False))
    else:
        tests = _discover_grouped(root / "imagesTs", None, len(channels), None)
    return DatasetDescription(
        name=str(data.get("name") or root.name),
        root=root,
        format="msd",
        channel_names=channels,
        labels=labels,
        cases=cases,
        test_cases=tests,
        declared_num_training=_int_or_none(data.get("numTraining")),
    )


def _discover_grouped(images: Path, labels: Path | None, channels: int, file_ending: str | None) -> list[Case]:
    """Cases from a folder: ``<case>_XXXX`` channel files grouped by case, or one entry per case."""
    entries = [e for e in _entries(images) if file_ending is None or e.is_dir() or e.name.endswith(file_ending)]
    grouped: dict[str, dict[int, Path]] = {}
    singles: list[Path] = []
    for entry in entries:
        match = CHANNEL_SUFFIX.match(_strip_suffix(entry))
        if match and int(match["channel"]) < max(channels, 1):
            grouped.setdefault(match["case"], {})[int(match["channel"])] = entry
        else:
            singles.append(entry)
    cases = []
    for case_id, files in sorted(grouped.items()):
        ending = file_ending or (full_suffix(files[min(files)]) or ".nii.gz")
        paths = [files.get(i, images / f"{case_id}_{i:04d}{ending}") for i in range(max(channels, max(files) + 1))]
        label = _label_for(labels, case_id, file_ending) if labels is not None else None
        cases.append(Case(case_id, paths, label))
    for entry in singles:
        case_id = _strip_suffix(entry)
        label = _label_for(labels, case_id, file_ending) if labels is not None else None
        cases.append(Case(case_id, [entry], label, multichannel_file=channels > 1 and entry.is_file()))
    return sorted(cases, key=lambda case: case.case_id)


def _regions_class_order(data: dict[str, Any], regions: dict[str, tuple[int, ...]], path: Path) -> list[int] | None:
    order = data.get("regions_class_order")
    if order is not None and (not isinstance(order, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in order)):
        raise InputError(path, f"'regions_class_order' must be a list of integers, got {order!r}")
    if regions and (order is None or len(order) != len(regions)):
        raise InputError(path, f"{len(regions)} region(s) ({', '.join(regions)}) need 'regions_class_order' with one label per region "
                               f"(nnU-Net v2), got {order!r}")
    return order


def _load_nnunet(root: Path, data: dict[str, Any]) -> DatasetDescription:
    path = root / "dataset.json"
    channels = _channels(_index_map(data, "channel_names", path), path)
    labels, regions = dataset_labels(data, path)
    ignore = next((value for value, name in labels.items() if name == "ignore"), None)
    if ignore is not None:
        del labels[ignore]
        if ignore <= max(labels, default=0) or any(ignore in members for members in regions.values()):
            raise InputError(path, f"the 'ignore' label ({ignore}) must be the highest label value and in no region (nnU-Net v2 rule)")
    order = _regions_class_order(data, regions, path)
    file_ending = str(data.get("file_ending") or ".nii.gz")
    explicit = data.get("dataset")
    if isinstance(explicit, dict) and explicit:  # nnU-Net v2 optional explicit case list
        cases = []
        for case_id, entry in sorted(explicit.items()):
            if not isinstance(entry, dict) or not isinstance(entry.get("images", []), list):
                raise InputError(path, f"'dataset' entry {case_id!r} must be an object with an 'images' list, got {entry!r:.80}")
            images = [_resolve(root, str(p)) for p in entry.get("images", [])]
            label = entry.get("label")
            cases.append(Case(str(case_id), images, _resolve(root, str(label)) if label else None))
    else:
        cases = _discover_grouped(root / "imagesTr", root / "labelsTr", len(channels), file_ending)
    tests = _discover_grouped(root / "imagesTs", None, len(channels), file_ending)
    return DatasetDescription(
        name=str(data.get("name") or root.name),
        root=root,
        format="nnunet",
        channel_names=channels,
        labels=labels,
        regions=regions,
        cases=cases,
        test_cases=tests,
        file_ending=file_ending,
        declared_num_training=_int_or_none(data.get("numTraining")),
        regions_class_order=order,
        ignore_label=ignore,
        foreground_mask=isinstance(data.get("foreground_mask"), dict),
        **_import_patterns(data, channels),
    )


def _import_patterns(data: dict[str, Any], channels: list[str]) -> dict[str, Any]:
    """The per-case-folder patterns ``medseg dataset import`` recorded, when every channel has one."""
    recorded = data.get("medseg_import") if isinstance(data.get("medseg_import"), dict) else {}
    patterns = recorded.get("channels") if isinstance(recorded.get("channels"), dict) else {}
    if not channels or not all(isinstance(patterns.get(name), str) for name in channels):
        return {}
    mask = data.get("foreground_mask") if isinstance(data.get("foreground_mask"), dict) else {}
    return {"channel_patterns": [patterns[name] for name in channels],
            "mask_pattern": mask.get("pattern") if isinstance(mask.get("pattern"), str) else None}


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def load_dataset(root: str | Path) -> DatasetDescription:
    """Detect the layout of ``root`` and describe it. Raises :class:`InputError` for a bad dataset.json."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise InputError(root, "is not a folder")
    data = _read_json(root / "dataset.json")
    description = _load_nnunet(root, data) if detect_format(root) == "nnunet" else _load_msd(root, data)
    if 0 not in description.labels:
        log.warning("%s: labels do not declare 0 (background)", root / "dataset.json")
    log.debug("%s: %s dataset, %d training and %d test cases", root, description.format, len(description.cases), len(description.test_cases))
    return description


def read_case_images(case: Case, num_channels: int) -> list[Volume]:
    """The case's channels as 3D image volumes (a 4D file is split, its grid shared)."""
    if case.multichannel_file or (len(case.images) == 1 and num_channels > 1):
        volume = read_volume(case.images[0], role="image", allow_channels=True)
        if volume.channels != num_channels:
            raise InputError(case.images[0], f"has {volume.channels} channel(s); dataset.json declares {num_channels}")
        if volume.array.ndim == 3:
            return [volume]
        return volume.split_channels()
    if len(case.images) != num_channels:
        raise InputError(case.images[0].parent, f"case {case.case_id} has {len(case.images)} channel file(s); dataset.json declares {num_channels}")
    return [read_volume(path, role="image") for path in case.images]


def read_case_label(case: Case) -> Volume | None:
    return None if case.label is None else read_volume(case.label, role="label")

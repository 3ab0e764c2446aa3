"""A medseg raw dataset in nnU-Net v2's raw layout, with medseg's own folds as nnU-Net's ``splits_final.json``.

nnU-Net reads ``DatasetXXX_Name/imagesTr/<case>_<channel:04d><ending>``, ``labelsTr/<case><ending>`` and a
``dataset.json`` with ``channel_names``, ``labels`` (name -> value), ``numTraining`` and ``file_ending``; a
``splits_final.json`` in its preprocessed folder (a list of ``{"train": [...], "val": [...]}``, one per fold)
overrides its own 5-fold split. medseg's splits (:func:`medseg.train.splits.load_or_create_splits`) have exactly
that form, so they are written as they are: both tools then hold out the same cases. Images and labels are
symbolic links to the original files (a 4D multi-channel NIfTI is split into one file per channel); nothing is
resampled or rewritten, so each tool reads the original voxels and geometry.
"""

from __future__ import annotations

import os
from pathlib import Path

from medseg.data.dataset import Case, DatasetDescription
from medseg.errors import InputError
from medseg.io.atomic import full_suffix, write_json

#: nnU-Net dataset id of the converted copy; it lives in the bench's own nnUNet_raw, so no id of the user's is taken.
DATASET_ID = 990
SPLITS_FILE = "splits_final.json"


def dataset_folder_name(description: DatasetDescription) -> str:
    safe = "".join(ch if ch.isalnum() else "_" for ch in description.name).strip("_") or "dataset"
    return f"Dataset{DATASET_ID:03d}_{safe}"


def _labels(description: DatasetDescription) -> dict[str, int]:
    """nnU-Net's ``labels``: name -> value, ``background`` for 0, values 0..N without gaps (nnU-Net requires them)."""
    if description.has_regions or description.ignore_label is not None:
        raise InputError(description.root, "region labels and ignore labels are not supported by `medseg bench peer nnunet` yet")
    values = sorted(description.labels)
    if values != list(range(len(values))):
        raise InputError(description.root / "dataset.json", f"nnU-Net needs consecutive label values 0..N, this dataset has {values}")
    names = {("background" if value == 0 else description.labels[value]): value for value in values}
    if len(names) != len(values):
        raise InputError(description.root / "dataset.json", "two labels share a name; nnU-Net needs distinct label names")
    return names


def _file_ending(cases: list[Case]) -> str:
    endings = {full_suffix(path) for case in cases for path in case.sources()}
    for case in cases:
        for path in case.sources():
            if path.is_dir():
                raise InputError(path, "is a folder (a DICOM series?); convert the dataset to NIfTI for the nnU-Net comparison")
    if len(endings) != 1:
        raise InputError(cases[0].images[0].parent, f"nnU-Net needs one file type for every image and label, found {sorted(endings)}")
    return endings.pop()


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(Path(target).resolve(), link)


def _split_channels(image: Path, folder: Path, case_id: str, ending: str) -> None:
    """A 4D MSD image (channels last) as one 3D NIfTI per channel, same affine."""
    import nibabel as nib
    import numpy as np

    volume = nib.load(str(image))
    for channel in range(volume.shape[3]):
        data = np.asanyarray(volume.dataobj[..., channel])
        nib.save(nib.Nifti1Image(data, volume.affine, volume.header), str(folder / f"{case_id}_{channel:04d}{ending}"))


def write_nnunet_raw(description: DatasetDescription, splits: list[dict[str, list[str]]], raw_root: str | Path) -> Path:
    """Write ``nnUNet_raw/DatasetXXX_Name`` for the cases of ``splits`` and return it; ``splits_final.json`` goes
    inside it (the nnU-Net child copies it into its preprocessed folder)."""
    wanted = sorted({case for fold in splits for part in ("train", "val") for case in fold[part]})
    by_id = {case.case_id: case for case in description.cases}
    unknown = [case for case in wanted if case not in by_id]
    if unknown:
        raise InputError(description.root, f"the splits name case(s) the dataset lacks: {', '.join(unknown[:5])}")
    cases = [by_id[case] for case in wanted]
    unlabelled = [case.case_id for case in cases if case.label is None]
    if unlabelled:
        raise InputError(description.root, f"{len(unlabelled)} training case(s) have no label, e.g. {unlabelled[0]}")
    ending = _file_ending(cases)
    folder = Path(raw_root) / dataset_folder_name(description)
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for case in cases:
        if case.multichannel_file:
            _split_channels(case.images[0], folder / "imagesTr", case.case_id, ending)
        else:
            for channel, image in enumerate(case.images):
                _link(image, folder / "imagesTr" / f"{case.case_id}_{channel:04d}{ending}")
        _link(case.label, folder / "labelsTr" / f"{case.case_id}{ending}")
    write_json(folder / "dataset.json", {
        "name": description.name, "channel_names": {str(index): name for index, name in enumerate(description.channel_names)},
        "labels": _labels(description), "numTraining": len(cases), "file_ending": ending,
    })
    write_json(folder / SPLITS_FILE, [{"train": list(fold["train"]), "val": list(fold["val"])} for fold in splits])
    return folder


def image_files(raw_folder: Path, case_id: str, channels: int, ending: str) -> list[str]:
    """The channel files of one case in nnU-Net's raw layout (what its predictor takes per case)."""
    return [str(raw_folder / "imagesTr" / f"{case_id}_{channel:04d}{ending}") for channel in range(channels)]

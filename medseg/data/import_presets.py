"""File-name presets for `medseg dataset import`: which file of a case folder is which channel, the
label map and the brain mask, and the BraTS evaluation regions of each BraTS label convention; or,
for a parallel-folders release (``layout="paired"``), which folder holds each channel and the labels.

BraTS changed its label values twice, so the regions depend on the release:

* **BraTS 2013-2015** (this repository's test set): 1 necrosis, 2 oedema, 3 non-enhancing tumour,
  4 enhancing tumour; whole tumour {1,2,3,4}, tumour core {1,3,4}, enhancing tumour {4};
* **BraTS 2017-2021**: 1 necrotic tumour core, 2 oedema, 4 enhancing tumour (no 3);
* **BraTS 2023** (GLI): 1 necrotic core, 2 oedema, 3 enhancing tumour.

``regions_class_order`` paints the encompassing region first (nnU-Net's rule: later entries
overwrite earlier ones): oedema where whole tumour is predicted, necrosis where tumour core is,
enhancing where enhancing tumour is. BraTS 2015's non-enhancing tumour (3) is part of the core but
no region tells it from necrosis, so a region-trained model paints it as necrosis (1).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RegionSet:
    """nnU-Net v2 regions (name -> label values, in declaration order) and the class each paints."""

    regions: dict[str, tuple[int, ...]]
    order: tuple[int, ...]


@dataclass(frozen=True)
class Preset:
    """What one dataset release calls its files: glob patterns matched case-insensitively inside each
    case folder, or (``layout="paired"``) the folders of the channels and of the label maps."""

    name: str
    description: str
    channels: tuple[tuple[str, str], ...]
    label: str
    mask: str | None
    label_names: dict[int, str]
    regions: RegionSet
    extra: dict[str, str] = field(default_factory=dict)
    layout: str = "case_folders"


BRATS_REGIONS = {
    "brats2015": RegionSet({"whole tumor": (1, 2, 3, 4), "tumor core": (1, 3, 4), "enhancing tumor": (4,)}, (2, 1, 4)),
    "brats2021": RegionSet({"whole tumor": (1, 2, 4), "tumor core": (1, 4), "enhancing tumor": (4,)}, (2, 1, 4)),
    "brats2023": RegionSet({"whole tumor": (1, 2, 3), "tumor core": (1, 3), "enhancing tumor": (3,)}, (2, 1, 3)),
}

PRESETS = {
    "brats2015": Preset(
        "brats2015",
        "BraTS 2013/2015 as DeepMedic distributes it: Flair_*, T1c_*, OTMultiClass* label, brainmask*",
        (("FLAIR", "Flair*"), ("T1c", "T1c*")),
        label="OTMultiClass*",
        mask="brainmask*",
        label_names={0: "background", 1: "necrosis", 2: "oedema", 3: "non-enhancing tumor", 4: "enhancing tumor"},
        regions=BRATS_REGIONS["brats2015"],
    ),
    "brats2021": Preset(
        "brats2021",
        "BraTS 2021 (and 2017-2022): <case>_flair, _t1, _t1ce, _t2, _seg .nii.gz",
        (("FLAIR", "*_flair.nii*"), ("T1", "*_t1.nii*"), ("T1ce", "*_t1ce.nii*"), ("T2", "*_t2.nii*")),
        label="*_seg.nii*",
        mask=None,
        label_names={0: "background", 1: "necrotic tumor core", 2: "oedema", 4: "enhancing tumor"},
        regions=BRATS_REGIONS["brats2021"],
    ),
    "brats2023": Preset(
        "brats2023",
        "BraTS 2023 glioma: <case>-t2f, -t1n, -t1c, -t2w, -seg .nii.gz",
        (("FLAIR", "*-t2f.nii*"), ("T1", "*-t1n.nii*"), ("T1c", "*-t1c.nii*"), ("T2", "*-t2w.nii*")),
        label="*-seg.nii*",
        mask=None,
        label_names={0: "background", 1: "necrotic tumor core", 2: "oedema", 3: "enhancing tumor"},
        regions=BRATS_REGIONS["brats2023"],
    ),
    "lidc": Preset(
        "lidc",
        "LIDC-IDRI nodule crops in parallel folders: image/<name>.nii.gz (CT, HU) and nodule_mask/<name>.nii.gz (1 = nodule); "
        "patients are the names before _R_ (train with train.split_group, as configs/lidc.yaml does)",
        (("CT", "image"),),
        label="nodule_mask",
        mask=None,
        label_names={0: "background", 1: "nodule"},
        regions=RegionSet({}, ()),
        layout="paired",
    ),
}

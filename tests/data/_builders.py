"""Tiny seeded raw datasets (MSD and nnU-Net v2 layouts) for the data-pipeline tests.

Each case is one phantom defined on a RAS grid (body ellipsoid, organ = label 1, tumor = label 2)
and can be *stored* in another orientation (LPS, permuted axes): the array is permuted/flipped and
the affine adjusted so that every voxel keeps its world position. Preprocessing must then give
the same result whatever the storage order.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform


def phantom(shape=(24, 20, 12), modality="CT", seed=0, organ=True, tumor=True) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, label uint8) on a RAS grid; CT in HU (air -1000 around the body), MR with zero background."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    centre = rng.uniform(-0.1, 0.1, 3)

    def ellipsoid(c, radii):
        return (((grid - np.asarray(c)[:, None, None, None]) / np.asarray(radii)[:, None, None, None]) ** 2).sum(0) <= 1

    body = ellipsoid(centre, (0.85, 0.8, 0.9))
    label = np.zeros(shape, np.uint8)
    if organ:
        label[ellipsoid(centre + [0.15, 0.0, 0.0], (0.45, 0.4, 0.5)) & body] = 1
    if tumor:
        label[ellipsoid(centre + [0.25, 0.05, 0.05], (0.22, 0.25, 0.3)) & body] = 2
    if modality == "CT":
        image = np.full(shape, -1000.0)
        image[body] = 40
        image[label == 1] = 60
        image[label == 2] = 20
        image = image + rng.normal(0, 10, shape)
    else:
        image = np.zeros(shape)
        image[body] = 300 + rng.normal(0, 20, int(body.sum()))
        image[label == 1] += 200
        image[label == 2] += 400
    return image.astype(np.float32), label


def ras_affine(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def store_as(array: np.ndarray, affine: np.ndarray, axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    """The same world content stored with its voxel axes pointing along ``axcodes`` (e.g. "LPS", "PSR")."""
    transform = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(tuple(axcodes)))
    return np.ascontiguousarray(apply_orientation(array, transform)), affine @ inv_ornt_aff(transform, array.shape[:3])


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
    return path


def make_msd(
    root: Path,
    cases: int = 3,
    modality: str = "CT",
    spacings=None,
    orientations=None,
    shape=(24, 20, 12),
    seed: int = 0,
    name: str = "TinyCT",
    training_list: bool = True,
) -> Path:
    """An MSD-layout dataset; ``spacings``/``orientations`` give each case's grid (cycled)."""
    spacings = spacings or [(1.0, 1.0, 1.0)]
    orientations = orientations or ["RAS"]
    training = []
    for index in range(cases):
        case_id = f"case_{index:03d}"
        image, label = phantom(shape, modality, seed + index)
        affine = ras_affine(spacings[index % len(spacings)], origin=(10.0 * index, -5.0, 3.0))
        code = orientations[index % len(orientations)]
        stored_image, stored_affine = store_as(image, affine, code)
        stored_label, _ = store_as(label, affine, code)
        save_nifti(stored_image, stored_affine, root / "imagesTr" / f"{case_id}.nii.gz")
        save_nifti(stored_label, stored_affine, root / "labelsTr" / f"{case_id}.nii.gz")
        training.append({"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"})
    data = {
        "name": name,
        "modality": {"0": modality},
        "labels": {"0": "background", "1": "organ", "2": "tumor"},
        "numTraining": cases,
        "numTest": 0,
        "training": training if training_list else [],
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(data, indent=2))
    return root


def make_nnunet(root: Path, cases: int = 2, shape=(16, 14, 10), seed: int = 0) -> Path:
    """An nnU-Net v2 region dataset with two MR channels (``_0000``, ``_0001``): whole = {1, 2}, then each class."""
    for index in range(cases):
        case_id = f"pro_{index:03d}"
        image, label = phantom(shape, "MR", seed + index)
        affine = ras_affine((0.8, 0.8, 2.0))
        save_nifti(image, affine, root / "imagesTr" / f"{case_id}_0000.nii.gz")
        save_nifti(image * 0.5 + 10, affine, root / "imagesTr" / f"{case_id}_0001.nii.gz")
        save_nifti(label, affine, root / "labelsTr" / f"{case_id}.nii.gz")
    image, _ = phantom(shape, "MR", seed + 99)
    save_nifti(image, ras_affine((0.8, 0.8, 2.0)), root / "imagesTs" / "pro_900_0000.nii.gz")
    save_nifti(image, ras_affine((0.8, 0.8, 2.0)), root / "imagesTs" / "pro_900_0001.nii.gz")
    data = {
        "name": "TinyProstate",
        "channel_names": {"0": "T2", "1": "ADC"},
        "labels": {"background": 0, "whole": [1, 2], "peripheral": 1, "transition": 2},
        "regions_class_order": [2, 1, 2],
        "numTraining": cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(data, indent=2))
    return root


def make_msd_4d(root: Path, cases: int = 2, shape=(16, 14, 10), seed: int = 0) -> Path:
    """A BrainTumour-like MSD dataset: one 4D NIfTI (2 MR channels, channels last) per case."""
    training = []
    for index in range(cases):
        case_id = f"BRATS_{index:03d}"
        image, label = phantom(shape, "MR", seed + index)
        stack = np.stack([image, image * 2.0], axis=-1)
        save_nifti(stack, ras_affine(), root / "imagesTr" / f"{case_id}.nii.gz")
        save_nifti(label, ras_affine(), root / "labelsTr" / f"{case_id}.nii.gz")
        training.append({"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"})
    data = {"name": "TinyBrain", "modality": {"0": "FLAIR", "1": "T1w"}, "labels": {"0": "background", "1": "edema", "2": "tumor"}, "training": training, "test": []}
    (root / "dataset.json").write_text(json.dumps(data, indent=2))
    return root


def make_broken(root: Path) -> Path:
    """Six cases: one good, five each with one deliberate problem (see BROKEN)."""
    make_msd(root, cases=6, name="Broken")
    images, labels = root / "imagesTr", root / "labelsTr"
    # case_000 shape mismatch: label one slice short
    label = nib.load(str(labels / "case_000.nii.gz"))
    save_nifti(np.asarray(label.dataobj)[:, :, :-1], label.affine, labels / "case_000.nii.gz")
    # case_001 label 7 in a 3-label set
    label = nib.load(str(labels / "case_001.nii.gz"))
    data = np.asarray(label.dataobj).copy()
    data[0, 0, 0] = 7
    save_nifti(data, label.affine, labels / "case_001.nii.gz")
    # case_002 missing label file
    (labels / "case_002.nii.gz").unlink()
    # case_003 NaN in the image
    image = nib.load(str(images / "case_003.nii.gz"))
    data = np.asarray(image.dataobj).astype(np.float32)
    data[1, 2, 3] = np.nan
    save_nifti(data, image.affine, images / "case_003.nii.gz")
    # case_004 label affine shifted by 5 mm
    label = nib.load(str(labels / "case_004.nii.gz"))
    shifted = label.affine.copy()
    shifted[0, 3] += 5.0
    save_nifti(np.asarray(label.dataobj), shifted, labels / "case_004.nii.gz")
    return root


BROKEN = {
    "case_000": "shape_mismatch",
    "case_001": "undeclared_label",
    "case_002": "missing_label",
    "case_003": "image_nan",
    "case_004": "affine_mismatch",
}


def dice(a: np.ndarray, b: np.ndarray, value: int) -> float:
    x, y = a == value, b == value
    total = x.sum() + y.sum()
    return 1.0 if total == 0 else float(2 * (x & y).sum() / total)


def square_or_die(value: int) -> int:
    """Worker function for the parallel tests: dies hard on 13, raises on 7."""
    import os

    if value == 13:
        os._exit(1)
    if value == 7:
        raise ValueError("seven is not allowed")
    return value * value


AFFINE_LPS = np.array([[-1.0, 0, 0, 30], [0, -1.0, 0, 20], [0, 0, 1.5, -5], [0, 0, 0, 1]])  # LPS storage, 1.5 mm slices


def brats_like(root: Path, cases: int = 2, shape=(14, 12, 8), seed: int = 0, float_label: bool = True) -> Path:
    """Case folders named as the DeepMedic BraTS 2015 copy: Flair_*, T1c_*, OTMultiClass (float), brainmask."""
    for index in range(cases):
        folder = root / f"pat{index:02d}"
        image, label = phantom(shape, "MR", seed + index)
        label = label.astype(np.float32) * (2 if index % 2 else 1)  # values {0,1,2} or {0,2,4}
        brain = (image > 0).astype(np.float64)
        shifted = np.where(brain > 0, image, -3.5).astype(np.float32)  # z-scored copy: air is not 0
        save_nifti(shifted, AFFINE_LPS, folder / "Flair_subtrMeanDivStd.nii.gz")
        save_nifti(shifted * 0.5, AFFINE_LPS, folder / "T1c_subtrMeanDivStd.nii.gz")
        save_nifti(label if float_label else label.astype(np.uint8), AFFINE_LPS, folder / "OTMultiClass.nii.gz")
        save_nifti(brain, AFFINE_LPS, folder / "brainmask.nii.gz")
        (folder / "License.txt").write_text("not an image")
    return root

"""A small seeded evaluation for the report tests: CT-like images, reference and predicted maps, an eval folder.

Labels (dataset.json): 1 liver (an ellipsoid organ), 2 tumor (small spherical lesions, evaluated
lesion by lesion), 3 spleen (absent from every case in both maps: the report must hide it).
Predictions differ from the references in known ways: the organ is shifted, case_b misses a
lesion, case_c has a false-positive lesion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.io import write_volume
from medseg.io.volume import Volume
from medseg.metrics import EvaluateConfig, evaluate

SHAPE = (40, 36, 20)
SPACING = (1.0, 1.2, 2.5)
AFFINE = np.diag([*SPACING, 1.0])
AFFINE[:3, 3] = (-20.0, -21.0, 10.0)
CASES = ("case_a", "case_b", "case_c", "case_d")
LABELS = {"background": 0, "liver": 1, "tumor": 2, "spleen": 3}


def ball(centre, radius_mm: float, shape=SHAPE, spacing=SPACING) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing)) <= radius_mm**2


def case_arrays(index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image HU float32, reference uint8, prediction uint8) of case number ``index``."""
    centre = np.array([20, 18, 10]) + rng.integers(-2, 3, 3)
    body = ball(centre, 17.0)
    reference = np.zeros(SHAPE, np.uint8)
    reference[ball(centre, 11.0)] = 1
    lesions = [(centre + (4, 3, 0), 4.0), (centre + (-5, -3, 1), 2.6)]  # ~0.27 mL and ~0.07 mL
    for lesion, radius in lesions:
        reference[ball(lesion, radius)] = 2
    prediction = np.zeros(SHAPE, np.uint8)
    prediction[ball(centre + (1 + index % 2, 0, 0), 11.0)] = 1
    for number, (lesion, radius) in enumerate(lesions):
        if not (index == 1 and number == 1):  # case_b misses its small lesion
            prediction[ball(lesion + (0, 1, 0), radius - 0.3)] = 2
    if index == 2:  # case_c: a false-positive lesion
        prediction[ball(centre + (-6, 6, -2), 2.2)] = 2
    image = np.where(body, 0.0, -1000.0) + np.where(reference == 1, 60.0, 0.0) + np.where(reference == 2, -40.0, 0.0)
    image = (image + rng.normal(0, 8, SHAPE)).astype(np.float32)
    return image, reference, prediction


@dataclass
class Synthetic:
    root: Path
    pred: Path
    gt: Path
    images: Path
    eval_dir: Path
    labels: Path


def make_evaluation(root: Path, cases=CASES, seed: int = 7, with_images: bool = True) -> Synthetic:
    """Write images/, gt/, pred/, dataset.json and evaluate them into eval/."""
    rng = np.random.default_rng(seed)
    folders = {name: root / name for name in ("pred", "gt", "images")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for index, case in enumerate(cases):
        image, reference, prediction = case_arrays(index, rng)
        write_volume(Volume(reference, AFFINE, "label"), folders["gt"] / f"{case}.nii.gz")
        write_volume(Volume(prediction, AFFINE, "label"), folders["pred"] / f"{case}.nii.gz")
        if with_images:
            write_volume(Volume(image, AFFINE, "image"), folders["images"] / f"{case}_0000.nii.gz")
    labels = root / "dataset.json"
    labels.write_text(json.dumps({"labels": LABELS}))
    eval_dir = root / "eval"
    config = EvaluateConfig(bootstrap_samples=200, lesion_size_bins_ml=[0.1, 0.2])
    evaluate(folders["pred"], folders["gt"], labels=labels, lesion_labels=["tumor"], out_dir=eval_dir, config=config, progress=False)
    return Synthetic(root, folders["pred"], folders["gt"], folders["images"], eval_dir, labels)

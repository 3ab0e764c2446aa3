"""Two- and three-slice volumes (LIDC nodule crops: 43-109 voxels in-plane, 2-62 slices, 0.5-0.98 mm in-plane,
0.6-3 mm slices) plan and come back on each input's exact grid, whether the plan up- or downsamples their slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.config.loader import load_config
from medseg.data.dataset import load_dataset, read_case_images, read_case_label
from medseg.data.importer import import_dataset, resolve_spec
from medseg.data.plan import plan_dataset
from medseg.data.preprocess import preprocess_volume, restore_labels
from tests.data._builders import save_nifti

#: (slices, in-plane mm, slice mm, axis codes): LIDC's thinnest crops, both orientations it stores.
THIN = [(2, 0.66, 2.5, "LPS"), (3, 0.62, 1.25, "LPS"), (2, 0.7, 0.625, "RAS"), (3, 0.86, 2.5, "RAS"), (2, 0.78, 1.8, "LPS"), (3, 0.5, 0.625, "LPS")]


def thin_crops(root, cases=THIN):
    """Parallel folders image/ + nodule_mask/ of LIDC-like crops: int16 HU, a centred nodule on every slice."""
    for index, (slices, inplane, thickness, codes) in enumerate(cases):
        shape = (44 + index % 3, 43 + index % 2, slices)
        rng = np.random.default_rng(index)
        grid = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape[:2]], indexing="ij"))
        disc = (grid**2).sum(0) * inplane**2 <= (3.0 + index % 3) ** 2  # 6-10 mm nodule
        label = np.repeat(disc[..., None], slices, axis=2)
        image = rng.normal(-850, 40, shape)
        image[label] = rng.normal(30, 20, int(label.sum()))
        sign = -1.0 if codes == "LPS" else 1.0
        affine = np.diag([sign * inplane, sign * inplane, thickness, 1.0])
        affine[:3, 3] = [12.0 * index, -40.0, -150.0 + 7 * index]
        save_nifti(image.astype(np.int16), affine, root / "image" / f"P{index // 2:03d}_R_{index % 2 + 1}.nii.gz")
        save_nifti(label.astype(np.int16), affine, root / "nodule_mask" / f"P{index // 2:03d}_R_{index % 2 + 1}.nii.gz")
    return root


@pytest.fixture(scope="module")
def thin_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("thin")
    import_dataset(thin_crops(root / "src"), root / "lidc", resolve_spec(preset="lidc"))
    return root / "lidc"


@pytest.mark.parametrize("target", [None, [0.7, 0.7, 0.625], [0.7, 0.7, 2.5]], ids=["median", "finer_slices", "one_slice"])
def test_thin_volumes_plan_and_round_trip_on_their_exact_grid(thin_dataset, tmp_path, target):
    """Planned (no pooling along an axis the patch cannot halve twice), preprocessed, and the preprocessed label
    brought back by the inference inverse lands on the input grid: exactly where no slice was merged, and
    still overlapping where a 2-slice 0.625 mm crop became one 2.5 mm slice."""
    overrides = ["preprocess.workers=1"] + ([f"plan.target_spacing={target}"] if target else [])
    plan = plan_dataset(thin_dataset, load_config(None, overrides), tmp_path / "plans.json", workers=1, progress=False)
    configuration = plan.configuration("3d")
    for axis, size in enumerate(configuration.patch_size):
        pooled = int(np.prod([stride[axis] for stride in configuration.strides]))
        assert size >= 1 and size % pooled == 0 and size // pooled >= 1
        assert pooled == 1 or size >= 2 * pooled, f"axis {axis}: patch {size} pooled {pooled}x"
    description = load_dataset(thin_dataset)
    slices = []
    for case in description.cases:
        image, label = read_case_images(case, 1), read_case_label(case)
        prepared = preprocess_volume(image, plan, configuration, label, case.case_id)
        assert min(prepared.image.shape[1:]) >= 1 and prepared.seg.shape == prepared.image.shape[1:]
        slices.append(prepared.image.shape[3])
        probabilities = torch.nn.functional.one_hot(torch.from_numpy(prepared.seg.astype(np.int64)), 2).permute(3, 0, 1, 2).float()
        restored, _ = restore_labels(probabilities, prepared.geometry)
        reference = np.asarray(label.array) > 0
        assert restored.shape == reference.shape and np.allclose(prepared.geometry.original_affine, label.affine)
        dice = 2 * (reference & (restored > 0)).sum() / (reference.sum() + (restored > 0).sum())
        assert dice >= (0.8 if target == [0.7, 0.7, 2.5] else 0.9), f"{case.case_id}: round-trip Dice {dice:.3f}"
    assert min(slices) == (2 if target == [0.7, 0.7, 0.625] else 1), "the thinnest crop as the plan resamples it (1: slices merged)"

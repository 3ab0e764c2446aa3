"""The persistent patch stream: plain tensors, uint8 labels, and the same batches for any worker count or resume point."""

from __future__ import annotations

import numpy as np
import torch

from medseg.data.sampling import CaseArrays
from medseg.train.loader import PatchSampling, PatchStream, default_workers, make_loader
from medseg.transforms.augment import AugmentConfig


def _case(case_id: str, seed: int) -> CaseArrays:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(1, 24, 24, 16)).astype(np.float32)
    seg = np.zeros((24, 24, 16), np.uint8)
    seg[8:16, 8:16, 4:12] = 1
    return CaseArrays(case_id, image, seg, {1: np.argwhere(seg == 1)})


CASES = {"a": _case("a", 0), "b": _case("b", 1)}
SAMPLING = PatchSampling((16, 16, 8), 2, 0.5, AugmentConfig())


def _stream(start: int, total: int) -> PatchStream:
    return PatchStream(CASES.__getitem__, list(CASES), SAMPLING, seed=3, start=start, total=total)


def test_batches_are_plain_tensors_with_uint8_labels():
    batch = next(iter(make_loader(_stream(0, 1), 0, pin_memory=False)))
    assert type(batch["image"]) is torch.Tensor and type(batch["label"]) is torch.Tensor  # no MONAI MetaTensor
    assert batch["image"].dtype == torch.float32 and batch["label"].dtype == torch.uint8
    assert batch["image"].shape == (2, 1, 16, 16, 8) and batch["label"].shape == (2, 1, 16, 16, 8)


def test_same_batches_for_any_worker_count_and_after_resume():
    alone = list(make_loader(_stream(0, 6), 0, pin_memory=False))
    workers = list(make_loader(_stream(0, 6), 2, pin_memory=False))
    resumed = list(make_loader(_stream(3, 6), 0, pin_memory=False))
    assert len(alone) == len(workers) == 6 and len(resumed) == 3
    for first, second in zip(alone, workers):
        torch.testing.assert_close(first["image"], second["image"])
    for first, second in zip(alone[3:], resumed):
        torch.testing.assert_close(first["image"], second["image"])
        assert torch.equal(first["label"], second["label"])
    assert not torch.equal(alone[0]["image"], alone[1]["image"])


def test_worker_count_follows_the_cores():
    assert default_workers(torch.device("cpu"), 2) == 0 and default_workers(torch.device("cpu"), 16) == 4
    assert default_workers(torch.device("cuda"), 16) == 12 and default_workers(torch.device("cuda"), 2) == 1


def test_stream_windows_reach_every_voxel_with_the_augmentation_margin():
    """The loader crops nnU-Net's larger initial patch but places it so the final window covers the whole case, z-edges included."""
    shape = (16, 16, 20)  # x, y: exactly the patch; z: 4 more
    image = (np.arange(np.prod(shape)) + 1).reshape(1, *shape).astype(np.float32)  # each voxel's flat index + 1
    case = CaseArrays("coords", image, np.zeros(shape, np.uint8), {})
    quiet = AugmentConfig(rotation_prob=1e-9, scale_prob=0, mirror_prob=0, noise_prob=0, blur_prob=0, brightness_prob=0,
                          contrast_prob=0, lowres_prob=0, gamma_prob=0, inverted_gamma_prob=0)  # margin on, nothing else
    stream = PatchStream(lambda _: case, ["coords"], PatchSampling((16, 16, 16), 4, 0.0, quiet), seed=0, start=0, total=50)
    seen = np.zeros(int(np.prod(shape)) + 1, bool)
    for batch in stream:
        seen[batch["image"].round().long().numpy().ravel()] = True
    assert seen[1:].all(), f"{int((~seen[1:]).sum())} of {int(np.prod(shape))} voxels never reached the network"

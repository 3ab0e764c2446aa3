"""Batches of augmented patches for training.

An :class:`~torch.utils.data.IterableDataset` yields whole batches, so the foreground share is
exact per batch (as in nnU-Net). Every worker derives its RNG from (seed, epoch, rank, worker), so
a resumed run sees the same data stream from the resumed epoch on. Errors inside workers are
re-raised naming the case, instead of an opaque "worker died".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from medseg.data.sampling import CaseArrays, foreground_flags, sample_patch
from medseg.errors import MedsegError
from medseg.transforms.augment import AugmentConfig, build_augmentation, sampled_patch_size

log = logging.getLogger(__name__)


class PatchBatches(IterableDataset):
    def __init__(
        self,
        load_case: Callable[[str], CaseArrays],
        case_ids: list[str],
        patch_size: tuple[int, ...],
        batch_size: int,
        augment: AugmentConfig,
        foreground_share: float,
        batches: int,
        seed: int,
        epoch: int = 0,
        rank: int = 0,
        anisotropic: bool = False,
        slice_axis: int | None = None,
    ) -> None:
        if not case_ids:
            raise MedsegError("no training cases: check the dataset and the fold split")
        self.load_case, self.case_ids = load_case, list(case_ids)
        self.patch_size, self.batch_size, self.batches = tuple(patch_size), batch_size, batches
        self.augment, self.foreground_share, self.seed = augment, foreground_share, seed
        self.epoch, self.rank, self.anisotropic, self.slice_axis = epoch, rank, anisotropic, slice_axis
        self._cache: dict[str, CaseArrays] = {}

    def _case(self, case_id: str) -> CaseArrays:
        if case_id not in self._cache:
            self._cache[case_id] = self.load_case(case_id)
        return self._cache[case_id]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        seed_seq = np.random.SeedSequence([self.seed, self.epoch, self.rank, worker_id])
        rng = np.random.default_rng(seed_seq)
        pipeline = build_augmentation(self.augment, self.patch_size, self.anisotropic, seed=int(seed_seq.generate_state(1)[0]))
        crop_size = sampled_patch_size(self.augment, self.patch_size)
        flags = foreground_flags(self.batch_size, self.foreground_share)
        for _ in range(worker_id, self.batches, workers):
            images, labels = [], []
            for forced in flags:
                case_id = self.case_ids[rng.integers(len(self.case_ids))]
                try:
                    image, seg = sample_patch(self._case(case_id), crop_size, rng, forced, self.slice_axis)
                    sample = pipeline({"image": torch.from_numpy(image), "label": torch.from_numpy(seg.astype(np.float32))})
                except MedsegError:
                    raise
                except Exception as error:
                    raise RuntimeError(f"preparing a training patch from case '{case_id}' failed: {type(error).__name__}: {error}") from error
                images.append(torch.as_tensor(sample["image"]).float())
                labels.append(torch.as_tensor(sample["label"]).round().to(torch.int64))
            yield {"image": torch.stack(images), "label": torch.stack(labels)}


def make_loader(dataset: PatchBatches, num_workers: int, pin_memory: bool) -> DataLoader:
    """A loader over pre-batched items; workers persist across the epoch only (the dataset is per epoch)."""
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
    )

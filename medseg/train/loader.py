"""One persistent stream of augmented patch batches for a whole training run.

:class:`PatchStream` is an :class:`~torch.utils.data.IterableDataset` that yields whole batches
(so the foreground share is exact per batch, as in nnU-Net). Batch ``g`` of the run is drawn from
its own RNG, seeded by ``(seed, rank, g)``, whichever worker makes it: worker ``w`` of ``W`` makes
batches ``g = start + w, start + w + W, ...`` and the DataLoader's round-robin hands them out in
order, so the stream is the same for any worker count and a resumed run (``start`` = the next
batch) sees exactly the batches the uninterrupted run would have seen. One loader lives for the
whole run: workers start once, not every epoch.

Batches reach the network as plain tensors (never MONAI MetaTensors, whose metadata handling costs
time on every operation): images float32, labels uint8 (widened on the device). Errors inside
workers are re-raised naming the case, instead of an opaque "worker died".
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from medseg.data.sampling import CaseArrays, foreground_flags, sample_patch
from medseg.errors import MedsegError
from medseg.transforms.augment import AugmentConfig, build_augmentation, sampled_patch_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PatchSampling:
    """What a batch is made of: patch, batch size, foreground share, 2D slicing and augmentation."""

    patch_size: tuple[int, ...]
    batch_size: int
    foreground_share: float
    augment: AugmentConfig
    anisotropic: bool = False
    slice_axis: int | None = None
    regions: tuple[tuple[int, ...], ...] | None = None  # region-based plans: foreground patches centred region by region


def plain(tensor: torch.Tensor) -> torch.Tensor:
    """A MONAI MetaTensor (or any subclass) as a plain tensor, without copying its data."""
    return tensor.as_subclass(torch.Tensor) if type(tensor) is not torch.Tensor else tensor


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """One torch thread inside the block. Augmenting a small patch gains nothing from more, and in the training
    process (where a CPU run loads) each tiny op of a 2-thread pool waited up to ~40 ms for a busy core (2 shared,
    loaded cores: 323 ms a hippocampus batch, 58 ms on one thread). Loader workers have one already. Only the
    thread count: :func:`medseg.runtime.threads_scope` also resets the determinism flags, ~0.1 s a call."""
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


def label_storage_dtype(values: np.ndarray) -> torch.dtype:
    return torch.uint8 if values.size == 0 or int(values.max()) < 256 else torch.int32


class PatchStream(IterableDataset):
    """Batches ``start .. total-1`` of a run (see the module docstring for why this is exact on resume)."""

    def __init__(self, load_case: Callable[[str], CaseArrays], case_ids: list[str], sampling: PatchSampling,
                 seed: int, start: int, total: int, rank: int = 0) -> None:
        if not case_ids:
            raise MedsegError("no training cases: check the dataset and the fold split")
        self.load_case, self.case_ids, self.sampling = load_case, list(case_ids), sampling
        self.seed, self.start, self.total, self.rank = seed, start, total, rank
        self._cache: dict[str, CaseArrays] = {}

    def _case(self, case_id: str) -> CaseArrays:
        if case_id not in self._cache:
            self._cache[case_id] = self.load_case(case_id)
        return self._cache[case_id]

    def make_batch(self, index: int, pipeline) -> dict[str, torch.Tensor]:
        """Batch number ``index`` of the run, from its own RNG, made on one torch thread."""
        sequence = np.random.SeedSequence([self.seed, self.rank, index])
        rng = np.random.default_rng(sequence)
        if hasattr(pipeline, "set_random_state"):
            pipeline.set_random_state(seed=int(sequence.generate_state(1)[0]))
        sampling = self.sampling
        crop_size = sampled_patch_size(sampling.augment, sampling.patch_size, sampling.anisotropic)
        with one_torch_thread():
            flags = foreground_flags(sampling.batch_size, sampling.foreground_share)
            pairs = [self._sample(rng, crop_size, forced, pipeline) for forced in flags]
            label = torch.stack([label for _, label in pairs])
            return {"image": torch.stack([image for image, _ in pairs]), "label": label.to(label_storage_dtype(label.numpy()))}

    def _sample(self, rng: np.random.Generator, crop_size: tuple[int, ...], forced: bool, pipeline) -> tuple[torch.Tensor, torch.Tensor]:
        """One augmented (image, label) pair from a random training case; a failure names the case."""
        sampling = self.sampling
        case_id = self.case_ids[rng.integers(len(self.case_ids))]
        try:
            image, seg = sample_patch(self._case(case_id), crop_size, rng, forced, sampling.slice_axis,
                                      list(sampling.regions) if sampling.regions else None, final_size=sampling.patch_size)
            sample = pipeline({"image": torch.from_numpy(image), "label": torch.from_numpy(seg.astype(np.float32))})
        except MedsegError:
            raise
        except Exception as error:
            raise RuntimeError(f"preparing a training patch from case '{case_id}' failed: {type(error).__name__}: {error}") from error
        return plain(torch.as_tensor(sample["image"])).float(), plain(torch.as_tensor(sample["label"])).round()

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        sampling = self.sampling
        pipeline = build_augmentation(sampling.augment, sampling.patch_size, sampling.anisotropic, seed=self.seed)
        for index in range(self.start + worker_id, self.total, workers):
            yield self.make_batch(index, pipeline)


def default_workers(device: torch.device, cores: int) -> int:
    """Loader processes: on CUDA most cores feed the GPU (nnU-Net uses 12 per GPU); on a CPU every worker
    takes a core from the network, so a quarter of them (none on 2 cores, measured: loading in the main
    process waited 5% of each step)."""
    if device.type == "cuda":
        return max(1, min(12, cores - 1))
    return cores // 4


def make_loader(stream: PatchStream, num_workers: int, pin_memory: bool) -> DataLoader:
    """The run's one loader over pre-batched items."""
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,  # iterated once for the whole run: workers already live that long
    )

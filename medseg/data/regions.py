"""nnU-Net v2 region outputs back to a label map: the one owner of that rule (training validation and inference)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def regions_to_labels(probabilities: torch.Tensor, order: Sequence[int], dim: int = 0, threshold: float = 0.5) -> torch.Tensor:
    """Region probabilities -> label map: region ``i`` paints ``order[i]`` where its probability exceeds
    0.5, later regions overwriting earlier ones (so the encompassing region goes first, nnU-Net's rule)."""
    import torch

    if probabilities.shape[dim] != len(order):
        raise ValueError(f"{probabilities.shape[dim]} region outputs for a regions_class_order of {len(order)}")
    dtype = torch.uint8 if max(order, default=0) < 256 else torch.int32
    shape = probabilities.shape[:dim] + probabilities.shape[dim + 1 :]
    labels = torch.zeros(shape, dtype=dtype, device=probabilities.device)
    for index, value in enumerate(order):
        labels[probabilities.select(dim, index) > threshold] = int(value)
    return labels

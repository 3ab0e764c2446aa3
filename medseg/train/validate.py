"""Full-volume sliding-window validation Dice, per class, on preprocessed cases."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from medseg.data.sampling import CaseArrays


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, classes: Iterable[int]) -> dict[int, float]:
    """Dice of each foreground class; NaN where both are empty (so it does not bias the mean)."""
    scores = {}
    for label in classes:
        pred, ref = prediction == label, reference == label
        total = int(pred.sum()) + int(ref.sum())
        scores[label] = float("nan") if total == 0 else 2.0 * int(np.logical_and(pred, ref).sum()) / total
    return scores


@torch.no_grad()
def predict_case(
    network: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    patch_size: tuple[int, ...],
    device: torch.device,
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    autocast_dtype: torch.dtype | None = None,
    slice_axis: int | None = None,
) -> np.ndarray:
    """Argmax label map of one preprocessed image (C, *spatial), Gaussian-weighted sliding window.

    For a 2D network on a 3D case, the slices along ``slice_axis`` are batched through the window.
    """
    tensor = torch.from_numpy(np.array(image, dtype=np.float32))  # copy: cached arrays are read-only memory maps

    def run(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            return network(batch).float()

    if slice_axis is None:
        logits = sliding_window_inference(tensor[None].to(device), patch_size, sw_batch_size, run, overlap=overlap, mode="gaussian")
        return logits[0].argmax(0).cpu().numpy().astype(np.uint8)
    slices = torch.movedim(tensor, slice_axis + 1, 0)  # (S, C, a, b)
    labels = []
    for start in range(0, slices.shape[0], 32):
        chunk = slices[start : start + 32].to(device)
        logits = sliding_window_inference(chunk, patch_size, sw_batch_size, run, overlap=overlap, mode="gaussian")
        labels.append(logits.argmax(1).cpu())
    return torch.movedim(torch.cat(labels), 0, slice_axis).numpy().astype(np.uint8)


def validate(
    network: Callable[[torch.Tensor], torch.Tensor],
    cases: Iterable[CaseArrays],
    classes: list[int],
    patch_size: tuple[int, ...],
    device: torch.device,
    overlap: float,
    sw_batch_size: int,
    autocast_dtype: torch.dtype | None = None,
    slice_axis: int | None = None,
) -> dict[str, object]:
    """Mean Dice per class over ``cases`` (NaN-aware), plus the per-case scores."""
    per_case = {}
    for case in cases:
        prediction = predict_case(network, case.image, patch_size, device, overlap, sw_batch_size, autocast_dtype, slice_axis)
        per_case[case.case_id] = dice_per_class(prediction, np.asarray(case.seg), classes)
    means = {label: float(np.nanmean([scores[label] for scores in per_case.values()])) if per_case else float("nan") for label in classes}
    finite = [value for value in means.values() if not np.isnan(value)]
    return {"dice": means, "mean_dice": float(np.mean(finite)) if finite else float("nan"), "per_case": per_case}

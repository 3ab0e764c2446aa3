"""Validation during training: a cheap on-device patch Dice every epoch, and full-volume Dice with
the exact predictor `medseg infer` uses.

* :class:`PatchDice` scores a fixed set of validation patches (drawn once, no augmentation) every
  epoch: one forward pass per batch, true/false positives summed on the device, one host sync at the
  end. It tracks learning at almost no cost; nnU-Net's "pseudo Dice" is the same idea.
* :func:`validate_volumes` runs :func:`medseg.infer.predictor.predict_probabilities` (Gaussian
  blending of probabilities) over whole preprocessed cases, so the Dice a run reports is the Dice
  that `medseg infer` gives on the same grid. The trainer runs it on a bounded number of cases
  every ``val_every`` epochs and on every validation case at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from medseg.data.sampling import CaseArrays
from medseg.infer.predictor import WindowSpec, predict_probabilities
from medseg.runtime import Runtime


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, classes: Iterable[int], ignore_label: int | None = None) -> dict[int, float]:
    """Dice of each foreground class; NaN where both are empty (so it does not bias the mean).

    Voxels marked with ``ignore_label`` count for nothing.
    """
    keep = None if ignore_label is None else reference != ignore_label
    scores = {}
    for label in classes:
        pred, ref = prediction == label, reference == label
        if keep is not None:
            pred &= keep
        total = int(pred.sum()) + int(ref.sum())
        scores[label] = float("nan") if total == 0 else 2.0 * int(np.logical_and(pred, ref).sum()) / total
    return scores


def summarize(per_case: dict[str, dict[int, float]], classes: list[int], kind: str) -> dict[str, object]:
    means = {label: float(np.nanmean([scores[label] for scores in per_case.values()])) if per_case else float("nan") for label in classes}
    finite = [value for value in means.values() if not np.isnan(value)]
    return {"dice": means, "mean_dice": float(np.mean(finite)) if finite else float("nan"), "per_case": per_case, "kind": kind}


class PatchDice:
    """Pseudo Dice per class on fixed validation patches, accumulated on the device."""

    def __init__(self, batches: list[dict[str, torch.Tensor]], classes: list[int], label_of: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 ignore_label: int | None = None) -> None:
        self.batches, self.classes, self.ignore_label = batches, classes, ignore_label
        self.label_of = label_of or (lambda logits: logits.argmax(1))

    @torch.no_grad()
    def __call__(self, network: torch.nn.Module, runtime: Runtime) -> dict[int, float]:
        if not self.batches:
            return {}
        was_training = network.training
        network.eval()
        counts = torch.zeros((len(self.classes), 3), dtype=torch.float64, device=runtime.device)
        for batch in self.batches:
            image = batch["image"].to(runtime.device, non_blocking=True)
            label = batch["label"].to(runtime.device, non_blocking=True).long()[:, 0]
            with runtime.autocast():
                output = network(image)
            output = output[0] if isinstance(output, (list, tuple)) else output
            predicted = self.label_of(output.float())
            keep = torch.ones_like(label, dtype=torch.bool) if self.ignore_label is None else label != self.ignore_label
            for row, value in enumerate(self.classes):
                pred, ref = (predicted == value) & keep, label == value
                counts[row, 0] += (pred & ref).sum()
                counts[row, 1] += pred.sum()
                counts[row, 2] += ref.sum()
        network.train(was_training)
        values = counts.cpu().numpy()  # the one host sync
        return {value: float(2 * tp / (p + r)) if p + r > 0 else float("nan") for value, (tp, p, r) in zip(self.classes, values)}


def predict_case_labels(network: torch.nn.Module, image: np.ndarray, spec: WindowSpec, runtime: Runtime, num_outputs: int,
                        to_labels: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
    """Label map of one preprocessed case with the inference predictor (probabilities blended, then argmax)."""
    target = runtime.device
    probabilities = predict_probabilities([network], image, spec, runtime, target, num_outputs)
    labels = (to_labels or (lambda p: p.argmax(0)))(probabilities)
    return labels.to(torch.uint8 if num_outputs < 256 else torch.int32).cpu().numpy()


def validate_volumes(
    network: torch.nn.Module,
    cases: Iterable[CaseArrays],
    classes: list[int],
    spec: WindowSpec,
    runtime: Runtime,
    num_outputs: int,
    *,
    kind: str = "held-out fold",  # the trainer passes what fold_cases says: 'held-out fold K' or 'training cases (fold all)' 
    to_labels: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ignore_label: int | None = None,
) -> dict[str, object]:
    """Mean Dice per class over whole ``cases`` (NaN-aware), plus the per-case scores."""
    was_training = network.training
    network.eval()
    per_case = {}
    for case in cases:
        prediction = predict_case_labels(network, case.image, spec, runtime, num_outputs, to_labels)
        per_case[case.case_id] = dice_per_class(prediction, np.asarray(case.seg), classes, ignore_label)
    network.train(was_training)
    return summarize(per_case, classes, kind)

"""Validation during training: a cheap on-device patch Dice every epoch, and full-volume Dice with
the exact predictor `medseg infer` uses.

* :class:`PatchDice` scores a fixed set of validation patches (drawn once, no augmentation) every
  epoch: one forward pass per batch, true/false positives summed on the device, one host sync at the
  end. It tracks learning at almost no cost; nnU-Net's "pseudo Dice" is the same idea.
* :func:`validate_volumes` runs :func:`medseg.infer.predictor.predict_probabilities` (Gaussian
  blending of probabilities) over whole preprocessed cases, so the Dice a run reports is the Dice
  that `medseg infer` gives on the same grid. The trainer runs it on a bounded number of cases
  every ``val_every`` epochs and on every validation case at the end; ``on_probabilities`` hands each
  case's blended probabilities on (the final validation writes them back onto the raw grid,
  :mod:`medseg.train.validation_outputs`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from medseg.data.sampling import CaseArrays
from medseg.infer.predictor import WindowSpec, predict_probabilities
from medseg.io.volume import label_dtype
from medseg.runtime import Runtime


def as_targets(classes) -> dict:
    """``[1, 2]`` -> {1: (1,), 2: (2,)}; a dict of key -> label values (regions) is kept."""
    return dict(classes) if isinstance(classes, dict) else {label: (label,) for label in classes}


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, classes, ignore_label: int | None = None) -> dict:
    """Dice of each foreground class (or region: key -> its label values); NaN where both are empty.

    Voxels marked with ``ignore_label`` count for nothing.
    """
    keep = None if ignore_label is None else reference != ignore_label
    scores = {}
    for key, values in as_targets(classes).items():
        pred, ref = np.isin(prediction, values), np.isin(reference, values)
        if keep is not None:
            pred &= keep
        total = int(pred.sum()) + int(ref.sum())
        scores[key] = float("nan") if total == 0 else 2.0 * int(np.logical_and(pred, ref).sum()) / total
    return scores


def summarize(per_case: dict[str, dict], classes, kind: str) -> dict[str, object]:
    classes = list(as_targets(classes))
    means = {label: float(np.nanmean([scores[label] for scores in per_case.values()])) if per_case else float("nan") for label in classes}
    finite = [value for value in means.values() if not np.isnan(value)]
    return {"dice": means, "mean_dice": float(np.mean(finite)) if finite else float("nan"), "per_case": per_case, "kind": kind}


class PatchDice:
    """Pseudo Dice per class (or region) on fixed validation patches, accumulated on the device.

    Label models: a voxel is class ``k`` where the argmax is ``k``. Region models
    (``region_outputs``): region ``i`` is on where output channel ``i`` is positive (sigmoid > 0.5)
    and is compared with the union of its label values.
    """

    def __init__(self, batches: list[dict[str, torch.Tensor]], classes, label_of: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 ignore_label: int | None = None, region_outputs: bool = False) -> None:
        self.batches, self.targets, self.ignore_label = batches, as_targets(classes), ignore_label
        self.classes = list(self.targets)
        self.region_outputs = region_outputs
        self.label_of = label_of or (lambda logits: logits.argmax(1))

    def _masks(self, output: torch.Tensor, label: torch.Tensor):
        predicted = None if self.region_outputs else self.label_of(output)
        for row, (key, values) in enumerate(self.targets.items()):
            reference = torch.isin(label, torch.tensor(values, device=label.device))
            yield row, (output[:, row] > 0 if self.region_outputs else torch.isin(predicted, torch.tensor(values, device=label.device))), reference

    @torch.no_grad()
    def __call__(self, network: torch.nn.Module, runtime: Runtime) -> dict:
        if not self.batches:
            return {}
        was_training = network.training
        network.eval()
        counts = torch.zeros((len(self.targets), 3), dtype=torch.float64, device=runtime.device)
        for batch in self.batches:
            image = batch["image"].to(runtime.device, non_blocking=True)
            label = batch["label"].to(runtime.device, non_blocking=True).long()[:, 0]
            with runtime.autocast():
                output = network(image)
            output = (output[0] if isinstance(output, (list, tuple)) else output).float()
            keep = torch.ones_like(label, dtype=torch.bool) if self.ignore_label is None else label != self.ignore_label
            for row, pred, ref in self._masks(output, label):
                pred = pred & keep
                counts[row, 0] += (pred & ref).sum()
                counts[row, 1] += pred.sum()
                counts[row, 2] += ref.sum()
        network.train(was_training)
        values = counts.cpu().numpy()  # the one host sync
        return {key: float(2 * tp / (p + r)) if p + r > 0 else float("nan") for key, (tp, p, r) in zip(self.classes, values)}


def predict_case_labels(network: torch.nn.Module, image: np.ndarray, spec: WindowSpec, runtime: Runtime, num_outputs: int,
                        to_labels: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
    """Label map of one preprocessed case with the inference predictor (probabilities blended, then argmax)."""
    probabilities = predict_probabilities([network], image, spec, runtime, runtime.device, num_outputs)
    return _label_map(probabilities, to_labels)


def _label_map(probabilities: torch.Tensor, to_labels: Callable[[torch.Tensor], torch.Tensor] | None) -> np.ndarray:
    labels = (to_labels or (lambda p: p.argmax(0)))(probabilities).to(torch.int32).cpu().numpy()
    return labels.astype(label_dtype(int(labels.max()) if labels.size else 0))


def validate_volumes(
    network: torch.nn.Module,
    cases: Iterable[CaseArrays],
    classes,
    spec: WindowSpec,
    runtime: Runtime,
    num_outputs: int,
    *,
    kind: str = "held-out fold",  # the trainer passes what fold_cases says: 'held-out fold K' or 'training cases (fold all)' 
    to_labels: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ignore_label: int | None = None,
    on_probabilities: Callable[[str, torch.Tensor], None] | None = None,
) -> dict[str, object]:
    """Mean Dice per class (or region) over whole ``cases`` (NaN-aware), plus the per-case scores.

    ``to_labels`` turns the blended probabilities into a label map (default argmax; region models
    paint by ``regions_class_order``), so regions are scored on the label map users get.
    ``on_probabilities(case_id, probabilities)`` receives each case's probabilities on the preprocessed grid.
    """
    was_training = network.training
    network.eval()
    per_case = {}
    for case in cases:
        probabilities = predict_probabilities([network], case.image, spec, runtime, runtime.device, num_outputs)
        if on_probabilities is not None:
            on_probabilities(case.case_id, probabilities)
        prediction = _label_map(probabilities, to_labels)
        del probabilities
        per_case[case.case_id] = dice_per_class(prediction, np.asarray(case.seg), classes, ignore_label)
    network.train(was_training)
    return summarize(per_case, classes, kind)

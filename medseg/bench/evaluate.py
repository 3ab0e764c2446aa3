"""`medseg bench evaluate`: time one full-size case (default 512x512x300, 10 labels) on one CPU core.

The synthetic case imitates an abdominal CT label map: organ-sized ellipsoids (liver ~2 L down to a
gallbladder ~40 mL, a long thin aorta) and a lesion label with several small tumours; the
prediction moves, scales and perturbs every structure, misses one lesion and adds false positives,
so every metric does real work. Only the evaluation is timed, not building the arrays.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from medseg.io.volume import Volume
from medseg.metrics.case import evaluate_case
from medseg.metrics.config import EvaluateConfig
from medseg.metrics.labels import LabelSpec
from medseg.bench.common import machine_info
from medseg.metrics.outputs import write_json

log = logging.getLogger(__name__)

# name, centre (fraction of the field of view), semi-axes (mm)
ORGANS = [
    ("liver", (0.35, 0.45, 0.55), (95.0, 80.0, 75.0)),
    ("spleen", (0.72, 0.55, 0.6), (45.0, 35.0, 50.0)),
    ("kidney_right", (0.3, 0.7, 0.45), (30.0, 28.0, 55.0)),
    ("kidney_left", (0.7, 0.7, 0.45), (30.0, 28.0, 55.0)),
    ("stomach", (0.62, 0.35, 0.62), (55.0, 40.0, 50.0)),
    ("pancreas", (0.52, 0.55, 0.5), (50.0, 15.0, 15.0)),
    ("gallbladder", (0.4, 0.35, 0.45), (18.0, 20.0, 28.0)),
    ("aorta", (0.5, 0.62, 0.5), (12.0, 12.0, 190.0)),
    ("bladder", (0.5, 0.45, 0.12), (40.0, 35.0, 30.0)),
]
LESIONS = [(0.3, 0.5, 0.6, 15.0), (0.4, 0.55, 0.5, 9.0), (0.33, 0.4, 0.52, 5.0), (0.73, 0.55, 0.62, 8.0), (0.28, 0.7, 0.43, 6.0), (0.45, 0.45, 0.58, 2.5)]


def _paint(array: np.ndarray, spacing: np.ndarray, centre_mm: np.ndarray, radii_mm: np.ndarray, value: int) -> None:
    low = np.maximum(np.floor((centre_mm - radii_mm) / spacing).astype(int), 0)
    high = np.minimum(np.ceil((centre_mm + radii_mm) / spacing).astype(int) + 1, array.shape)
    if np.any(high <= low):
        return
    grids = np.ogrid[tuple(slice(a, b) for a, b in zip(low, high))]
    inside = sum(((g * s - c) / r) ** 2 for g, s, c, r in zip(grids, spacing, centre_mm, radii_mm)) <= 1.0
    array[tuple(slice(a, b) for a, b in zip(low, high))][inside] = value


def synthetic_case(shape=(512, 512, 300), spacing=(0.8, 0.8, 1.5), seed: int = 0) -> tuple[Volume, Volume, list[LabelSpec]]:
    """(prediction, reference, labels): 9 organs plus a lesion label (value 10)."""
    rng = np.random.default_rng(seed)
    spacing = np.asarray(spacing, dtype=float)
    extent = np.asarray(shape) * spacing
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    for value, (_, centre, radii) in enumerate(ORGANS, start=1):
        centre_mm, radii_mm = np.asarray(centre) * extent, np.asarray(radii)
        _paint(ref, spacing, centre_mm, radii_mm, value)
        shift = rng.uniform(-2.0, 2.0, 3) * spacing
        _paint(pred, spacing, centre_mm + shift, radii_mm * rng.uniform(0.95, 1.05, 3), value)
        # a false-positive blob near the organ, as real networks make
        _paint(pred, spacing, centre_mm + radii_mm * np.array([1.3, 0, 0]), np.full(3, 4.0), value)
    for index, (x, y, z, radius) in enumerate(LESIONS):
        centre_mm = np.array([x, y, z]) * extent
        _paint(ref, spacing, centre_mm, np.full(3, radius), 10)
        if index != len(LESIONS) - 1:  # the smallest lesion is missed
            _paint(pred, spacing, centre_mm + rng.uniform(-1.5, 1.5, 3), np.full(3, radius * rng.uniform(0.85, 1.1)), 10)
    _paint(pred, spacing, np.array([0.6, 0.3, 0.4]) * extent, np.full(3, 4.0), 10)  # false-positive lesion
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -extent / 2
    specs = [LabelSpec(name, (value,)) for value, (name, _, _) in enumerate(ORGANS, start=1)] + [LabelSpec("tumor", (10,))]
    return Volume(pred, affine, "label"), Volume(ref, affine, "label"), specs


def _time_with_io(pred: Volume, ref: Volume, specs: list[LabelSpec], config: EvaluateConfig) -> float:
    from medseg.io.readers import write_volume
    from medseg.metrics.evaluate import evaluate

    with tempfile.TemporaryDirectory(prefix="medseg-bench-") as folder:
        root = Path(folder)
        write_volume(pred, root / "pred.nii.gz")
        write_volume(ref, root / "ref.nii.gz")
        labels = {str(spec.values[0]): spec.name for spec in specs}
        started = time.perf_counter()
        evaluate(root / "pred.nii.gz", root / "ref.nii.gz", labels=labels, config=config, out_dir=root / "out", progress=False)
        return time.perf_counter() - started


def bench_evaluate(
    shape=(512, 512, 300),
    spacing=(0.8, 0.8, 1.5),
    repeats: int = 3,
    seed: int = 0,
    lesions: bool = True,
    with_io: bool = False,
    out_json: str | Path | None = None,
) -> dict:
    """Time :func:`evaluate_case` on the synthetic case; best and all of ``repeats`` runs, in seconds.

    Everything runs in this single thread (numpy, scipy's KD-tree and labelling are single-threaded
    here), so the time is one CPU core's. ``with_io`` also times the whole :func:`evaluate` call on
    the pair saved as .nii.gz (reading, evaluating, writing summary.json and the CSVs).
    """
    pred, ref, specs = synthetic_case(shape, spacing, seed)
    config = EvaluateConfig(lesion_labels=["tumor"] if lesions else [])
    lesion_specs = [specs[-1]] if lesions else []
    times = []
    for _ in range(max(repeats, 1)):
        started = time.perf_counter()
        rows, lesion_rows = evaluate_case(pred, ref, specs, config, "bench", lesion_specs)
        times.append(time.perf_counter() - started)
    result = {
        "shape": list(shape),
        "spacing_mm": [float(s) for s in spacing],
        "labels": len(specs),
        "lesion_labels": len(lesion_specs),
        "seconds_best": min(times),
        "seconds_all": times,
        "machine": machine_info(),
        "dice": {row["label"]: row["dice"] for row in rows},
        "hd95_mm": {row["label"]: row["hd95"] for row in rows},
        "lesions": {"ref": sum(r["source"] == "ref" for r in lesion_rows), "pred": sum(r["source"] == "pred" for r in lesion_rows)},
    }
    if with_io:
        result["seconds_with_io"] = _time_with_io(pred, ref, specs, config)
    log.info("evaluate %s with %d labels: best %.2f s of %d", "x".join(map(str, shape)), len(specs), min(times), len(times))
    if out_json is not None:
        write_json(result, out_json)
    return result

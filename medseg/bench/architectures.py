"""Every registered architecture trained under one budget on one dataset, side by side.

``medseg bench architectures DATASET --config CONFIG --minutes 10 -o reports/architectures.json`` trains each
registry entry (or those named with ``--model``) for the same wall-clock budget with the same plan, config and
fold, then reports per architecture: validation Dice per label (every case of the held-out fold, the number
`medseg infer` gives), parameters, median seconds per training step, iterations reached, and seconds per case of
`medseg infer` on held-out cases. Only the public API is used (``train``, ``infer``, ``load_checkpoint``). The JSON
and the markdown table are rewritten after each architecture, so a stopped run keeps what it measured.
"""

from __future__ import annotations

import csv
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from medseg.bench.common import load_average, machine_info
from medseg.io.atomic import write_json, write_text

log = logging.getLogger(__name__)


def _parameters(run_dir: Path) -> int:
    from medseg.train.checkpoint import load_checkpoint

    checkpoint = run_dir / "checkpoint_best.pt"
    payload = load_checkpoint(checkpoint if checkpoint.is_file() else run_dir / "checkpoint_last.pt")
    statistics_buffers = ("running_mean", "running_var", "num_batches_tracked")
    seen, total = set(), 0
    for name, tensor in payload.model.items():  # dynunet registers blocks under two names: count each storage once
        if tensor.is_floating_point() and not name.endswith(statistics_buffers) and tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel()
    return total


def _median_step_s(run_dir: Path) -> float | None:
    with open(run_dir / "training_log.csv", newline="") as handle:
        steps = [float(row["step_s"]) for row in csv.DictReader(handle) if row.get("step_s")]
    return statistics.median(steps) if steps else None


def _held_out_images(run_dir: Path, dataset: Path, count: int) -> list[Path]:
    """The first ``count`` validation cases of the run, as raw image files of the dataset (single-channel MSD layout)."""
    from medseg.train.checkpoint import load_checkpoint

    payload = load_checkpoint(run_dir / "checkpoint_last.pt")
    images = []
    for case in payload.val_cases[:count]:  # one file, or every channel file <case>_NNNN of a multi-modal case
        images += sorted((dataset / "imagesTr").glob(f"{case}.nii*")) or sorted((dataset / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9].nii*"))
    return images


def _infer_seconds(run_dir: Path, images: list[Path], work: Path) -> float | None:
    """Seconds per case of `medseg infer` (default settings) over ``images``, from reading to the mask written."""
    from medseg.infer import infer

    if not images:
        return None
    source = work / "held_out"
    source.mkdir(parents=True, exist_ok=True)
    for image in images:
        link = source / image.name
        if not link.exists():
            link.symlink_to(image.resolve())
    started = time.perf_counter()
    report = infer(run_dir, source, work / "predictions")
    return (time.perf_counter() - started) / max(len(report.outputs), 1)


def train_one(name: str, dataset: Path, config_path: Path | None, minutes: float, work: Path, overrides: list[str],
              infer_cases: int) -> dict[str, Any]:  # fmt: skip
    """Train ``name`` for ``minutes`` and measure it; the row of the table."""
    from medseg.config.loader import load_config
    from medseg.train.api import train

    config = load_config(config_path, [*overrides, f"model.name={name}", f"train.max_minutes={minutes}",
                                       f"work_dir={work / 'cache'}", f"run_dir={work / name}"])
    config.dataset = str(dataset)
    started = time.perf_counter()
    (result,) = train(config, [config.train.fold], progress=False)
    wall = time.perf_counter() - started
    summary = json.loads((result.run_dir / "summary.json").read_text())  # the final validation on every held-out case, by label name
    dice = {label: round(float(value), 4) for label, value in (summary.get("final_validation") or {}).items()}
    return {"model": name, "dice": dice, "mean_dice": round(statistics.mean(dice.values()), 4) if dice else None,
            "validation": summary.get("validation"), "validation_cases": summary.get("validation_cases"), "parameters": _parameters(result.run_dir), "step_s_median": _median_step_s(result.run_dir),
            "iterations": result.iterations_done, "epochs": result.epochs_done, "train_wall_minutes": round(wall / 60, 2),
            **_timed_inference(result.run_dir, dataset, infer_cases, work / f"{name}_infer"), "load_average_after": load_average()}


def _timed_inference(run_dir: Path, dataset: Path, cases: int, work: Path) -> dict[str, Any]:
    """Inference seconds per case, or why there are none: a failure here must not cost the row its training numbers."""
    try:
        return {"infer_s_per_case": _infer_seconds(run_dir, _held_out_images(run_dir, dataset, cases), work)}
    except Exception as error:
        log.debug("bench architectures: inference of %s failed", run_dir, exc_info=True)
        return {"infer_s_per_case": None, "infer_error": f"{type(error).__name__}: {str(error)[:200]}"}


def render_markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [f"# medseg bench architectures ({result['date']})", "",
             f"Dataset `{result['dataset']}`, fold {result['fold']}, {result['minutes']} minutes of training each, config "
             f"`{result['config'] or '(none)'}`; {machine['cpu']}, {machine['cores']} cores; "
             + ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v), ""]
    rows = [row for row in result["rows"] if "error" not in row]
    labels = sorted({label for row in rows for label in row["dice"]})
    header = ["model", *(f"Dice {label}" for label in labels), "mean", "parameters", "s/step", "iterations", "infer s/case"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["model"], *(f"{row['dice'].get(label, float('nan')):.4f}" for label in labels),
                 f"{row['mean_dice']:.4f}" if row["mean_dice"] is not None else "-", f"{row['parameters'] / 1e6:.2f} M",
                 f"{row['step_s_median']:.3f}" if row["step_s_median"] else "-", str(row["iterations"]),
                 f"{row['infer_s_per_case']:.2f}" if row["infer_s_per_case"] else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"\n{row['model']}: failed: {row['error']}")
    return "\n".join(lines) + "\n"


def bench_architectures(dataset: str | Path, out: str | Path, config: str | Path | None = None, minutes: float = 10.0,
                        models: list[str] | None = None, overrides: list[str] | None = None, infer_cases: int = 5,
                        work_dir: str | Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Train and measure each of ``models`` (default: every registered one) in turn; write ``out`` and its markdown."""
    from medseg.config.loader import load_config
    from medseg.models import available_models
    from medseg.models.registry import model_entry

    names = list(models or available_models())
    for name in names:
        model_entry(name)  # an unknown name fails before any training, listing the valid ones
    out = Path(out)
    fold = load_config(Path(config) if config else None, list(overrides or [])).train.fold
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "dataset": str(dataset), "config": str(config) if config else None,
                              "minutes": minutes, "fold": fold, "machine": machine_info(), "rows": []}
    with tempfile.TemporaryDirectory(prefix="medseg_bench_arch_") as temporary:
        work = Path(work_dir or temporary)
        for name in names:
            log.info("bench architectures: %s (%.1f minutes)", name, minutes)
            try:
                row = train_one(name, Path(dataset), Path(config) if config else None, minutes, work, list(overrides or []), infer_cases)
            except Exception as error:  # one failing network must not hide the others' numbers
                log.debug("bench architectures: %s failed", name, exc_info=True)
                row = {"model": name, "error": f"{type(error).__name__}: {str(error)[:300]}"}
            result["rows"].append(row)
            write_json(out, result)
            write_text(out.with_suffix(".md"), render_markdown(result))
    return result

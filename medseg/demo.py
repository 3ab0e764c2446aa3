"""`medseg demo`: the whole pipeline on the built-in synthetic CT tumor dataset.

Each stage is a small function over the public Python API, so the demo doubles as an example of
how to call medseg from a notebook. Stages are added as the pipeline grows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import MedsegError

log = logging.getLogger(__name__)


@dataclass
class DemoSettings:
    out_dir: Path
    cases: int = 10
    test_cases: int = 4  # the synthetic tumors range from 0.1 to 15 mL: two cases are too few to say much
    seed: int = 0
    train_minutes: float | None = None


@dataclass
class DemoState:
    settings: DemoSettings
    dataset_dir: Path | None = None
    config: Any = None
    plan: dict[str, Any] | None = None
    cache_dir: Path | None = None
    run_dir: Path | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def stage_synthetic(state: DemoState) -> str:
    from medseg.data.synthetic import make_synthetic_dataset

    settings = state.settings
    state.dataset_dir = make_synthetic_dataset(settings.out_dir / "dataset", cases=settings.cases, seed=settings.seed, test_cases=settings.test_cases)
    images = sorted((state.dataset_dir / "imagesTr").glob("*.nii.gz"))
    return f"{len(images)} training + {settings.test_cases} test CT cases in {state.dataset_dir}"


def stage_io_round_trip(state: DemoState) -> str:
    """Write one case as a DICOM series, read both back, check they agree voxel for voxel and in world mm."""
    from medseg.io import read_volume, write_volume
    from medseg.io.dicom_write import write_dicom_series
    from medseg.io.geometry import corner_points
    from medseg.io.inspect import describe_path

    source = sorted((state.dataset_dir / "imagesTr").glob("*.nii.gz"))[0]
    nifti = read_volume(source)
    dicom_dir = state.settings.out_dir / "io" / "dicom_series"
    write_dicom_series(nifti, dicom_dir, modality="CT", series_description="medseg demo synthetic CT", overwrite=True)
    dicom = read_volume(dicom_dir)
    # A DICOM stack may store the slice axis the other way round; compare in one orientation.
    a, b = nifti.reoriented("RAS"), dicom.reoriented("RAS")
    if a.shape != b.shape or not np.array_equal(a.array, b.array):
        raise MedsegError(f"DICOM round trip changed voxel values of {source.name}")
    error_mm = float(np.abs(corner_points(a.shape, a.affine) - corner_points(b.shape, b.affine)).max())
    if error_mm > 1e-3:
        raise MedsegError(f"DICOM round trip moved {source.name} by {error_mm:.4f} mm")
    converted = []
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        target = state.settings.out_dir / "io" / f"from_dicom{suffix}"
        write_volume(dicom, target)
        converted.append(target.name)
    state.facts["info"] = describe_path(dicom_dir)
    return f"{source.name} ({nifti.orientation}, {nifti.shape}) -> DICOM {len(list(dicom_dir.iterdir()))} slices -> {', '.join(converted)}; max world error {error_mm:.1e} mm"


def _demo_config(state: DemoState):
    """configs/synthetic.yaml (sized for a CPU), with the demo's own folders."""
    from medseg.config.loader import load_config

    from medseg.data.recipes import packaged_folder

    config_path = packaged_folder("medseg.configs") / "synthetic.yaml"
    if not config_path.is_file():
        raise MedsegError(f"{config_path}: demo config not found; reinstall medseg (pip install -e .)")
    out = state.settings.out_dir
    config = load_config(config_path, [f"work_dir={out / 'work'}", f"run_dir={out / 'run'}"])
    config.dataset = str(state.dataset_dir)
    if state.settings.train_minutes:
        config.train.max_minutes = state.settings.train_minutes
    return config


def stage_check(state: DemoState) -> str:
    from medseg.data.check import check_dataset, has_errors

    problems = check_dataset(state.dataset_dir)
    if has_errors(problems):
        raise MedsegError(f"synthetic dataset failed its check: {problems[0].message}")
    return f"{len(problems)} warning(s), no errors"


def stage_plan(state: DemoState) -> str:
    from medseg.data.plan import plan_dataset

    state.config = _demo_config(state)
    plan = plan_dataset(state.dataset_dir, state.config, Path(state.config.work_dir) / "plans.json", workers=state.config.preprocess.workers, progress=False)
    state.plan = plan
    train, model = state.config.train, state.config.model
    planned = plan.configuration(train.configuration)
    chosen = planned.with_overrides(train.patch_size, train.batch_size)  # what training runs: the demo config's patch and batch
    width = f"base {model.base_features} features (config)" if model.base_features else f"features {planned.features_per_stage}"
    return (f"{chosen.name} ('3d' on this {plan.planned_for.kind if plan.planned_for else 'machine'}): grid {[round(v, 2) for v in chosen.grid_spacing()]} mm, "
            f"patch {chosen.patch_size}, batch {chosen.batch_size}, {width}; CT clip {plan.preprocessing.normalization[0].clip}")


def stage_preprocess(state: DemoState) -> str:
    from medseg.train.api import prepare_cache

    state.cache_dir = prepare_cache(state.dataset_dir, state.config, progress=False)
    return f"cache in {state.cache_dir}"


def stage_train(state: DemoState) -> str:
    from medseg.train.api import train

    result = train(state.config, folds=[0], progress=True)[0]
    state.run_dir = result.run_dir
    dice = result.last_validation["dice"] if result.last_validation else {}
    labels = state.plan.labels
    scores = ", ".join(f"{labels[k]} {v:.3f}" for k, v in dice.items())
    return f"{result.iterations_done} iterations in {result.epochs_done} epochs; validation Dice {scores}; curves in {result.run_dir / 'training_curves.png'}"


def stage_infer(state: DemoState) -> str:
    """Segment the held-back cases (never seen in training) with the trained run folder."""
    from medseg.infer import infer

    out = state.settings.out_dir / "predictions"
    report = infer(state.run_dir, state.dataset_dir / "imagesTs", out, progress=True)
    state.facts["predictions"] = out
    cases = len(report.outputs)
    return f"{cases} held-back cases segmented in {report.seconds:.1f} s; masks and JSON sidecars in {out}"


def stage_evaluate(state: DemoState) -> str:
    from medseg.metrics import evaluate

    out = state.settings.out_dir / "evaluation"
    result = evaluate(state.facts["predictions"], state.dataset_dir / "labelsTs", labels=state.dataset_dir / "dataset.json",
                      out_dir=out, config=state.config.evaluate, progress=False)
    state.facts["evaluation"] = out
    scores = ", ".join(f"{name} {value:.3f}" for name, value in result.mean("dice").items() if value is not None)
    lesions = "; ".join(f"{name} lesions found {stats['tp']} of {stats['lesions_ref']} (false positives {stats['fp']})"
                        for name, stats in result.summary.get("lesions", {}).items())
    return f"mean Dice on held-back cases: {scores}; {lesions}; summary.json, cases.csv, lesions.csv in {out}"


def stage_report(state: DemoState) -> str:
    from medseg.report import build_report

    html = build_report(state.facts["evaluation"], state.settings.out_dir / "report.html", images=state.dataset_dir / "imagesTs",
                        model=state.run_dir, title="medseg demo: synthetic liver tumor CT", progress=False)
    return f"open {html.resolve()} in a browser"


STAGES: list[tuple[str, Callable[[DemoState], str]]] = [
    ("synthetic dataset", stage_synthetic),
    ("DICOM/NIfTI round trip", stage_io_round_trip),
    ("dataset check", stage_check),
    ("plan", stage_plan),
    ("preprocess", stage_preprocess),
    ("train", stage_train),
    ("infer", stage_infer),
    ("evaluate", stage_evaluate),
    ("report", stage_report),
]


def run_demo(settings: DemoSettings, on_stage: Callable[[str, str, float], None] | None = None) -> DemoState:
    """Run every stage in order; ``on_stage(name, summary, seconds)`` reports each as it finishes."""
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    state = DemoState(settings)
    for name, stage in STAGES:
        started = time.perf_counter()
        log.debug("demo: %s", name)
        summary = stage(state)
        seconds = time.perf_counter() - started
        if on_stage:
            on_stage(name, summary, seconds)
    return state

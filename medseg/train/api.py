"""Training from a raw dataset or a cache, for one fold or all: the Python API behind `medseg train`."""

from __future__ import annotations

import logging
from pathlib import Path

from medseg.errors import ConfigError, InputError, MedsegError
from medseg.run_config import RunConfig

log = logging.getLogger(__name__)


def is_cache(path: Path) -> bool:
    return (path / "plan.json").is_file() and (path / "cache_info.json").is_file()


def prepare_cache(dataset: str | Path, config: RunConfig, progress: bool = True) -> Path:
    """Return a preprocessed cache for ``dataset``, planning and preprocessing on the fly when needed.

    An existing plan is reused only if it was made with the same planning settings; otherwise the
    dataset is re-planned (the cache then notices the changed plan and recomputes).
    """
    from medseg.data.cache import preprocess_dataset
    from medseg.data.config import default_work_dir
    from medseg.data.dataset import load_dataset
    from medseg.data.plan import load_plan, plan_dataset

    dataset = Path(dataset)
    if is_cache(dataset):
        return dataset
    description = load_dataset(dataset)
    work = Path(config.work_dir) if config.work_dir else default_work_dir(description.name)
    plan_path = work / "plans.json"
    plan = load_plan(plan_path) if plan_path.is_file() else None
    if plan is not None and plan.get("config") != config.plan.model_dump(mode="json"):
        log.info("planning settings changed since %s was written: re-planning", plan_path)
        plan = None
    if plan is None:
        plan = plan_dataset(dataset, config, plan_path, workers=config.preprocess.workers)
    report = preprocess_dataset(description, plan, work / "preprocessed", workers=config.preprocess.workers, progress=progress)
    if report.failed:
        first = next(iter(report.failed.items()))
        raise MedsegError(f"{len(report.failed)} case(s) failed preprocessing, e.g. {first[0]}: {first[1]}; run `medseg dataset check {dataset}`")
    return report.cache_dir


def default_run_dir(cache_dir: Path, config: RunConfig) -> Path:
    from medseg.data.plan import load_plan

    if config.run_dir:
        return Path(config.run_dir)
    name = load_plan(cache_dir / "plan.json").get("dataset", "dataset")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return Path("runs") / safe / config.train.configuration


def train(config: RunConfig, folds: list[int] | None = None, resume: bool = False, progress: bool = True) -> list:
    """Train ``folds`` (default: ``config.train.fold``) one after another into ``<run_dir>/fold_<k>``."""
    from medseg.train.trainer import Trainer

    if not config.dataset:
        raise ConfigError("no dataset: pass a dataset folder, or set `dataset:` in the config")
    if not Path(config.dataset).exists():
        raise InputError(config.dataset, "dataset folder does not exist")
    cache_dir = prepare_cache(config.dataset, config, progress)
    parent = default_run_dir(cache_dir, config)
    results = []
    for fold in folds if folds is not None else [config.train.fold]:
        fold_config = config.model_copy(deep=True)
        fold_config.train.fold = fold
        run_dir = parent / f"fold_{fold}"
        fold_resume = resume and (run_dir / "checkpoint_last.pt").is_file()
        if resume and not fold_resume:
            log.info("%s has no checkpoint yet: starting it from scratch", run_dir)
        log.info("training fold %d into %s", fold, run_dir)
        results.append(Trainer(fold_config, cache_dir, run_dir, resume=fold_resume, progress=progress).fit())
    return results

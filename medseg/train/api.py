"""Training from a raw dataset or a cache, for one fold, several, or every case: the Python API behind `medseg train`."""

from __future__ import annotations

import logging
from pathlib import Path

from medseg.config.schema import RunConfig
from medseg.errors import ConfigError, InputError, MedsegError

log = logging.getLogger(__name__)

#: ``--fold all``: train on every case (nnU-Net's meaning); validation then runs on training cases.
ALL_CASES = "all"


def is_cache(path: Path) -> bool:
    return (path / "plan.json").is_file() and (path / "cache_info.json").is_file()


def _replan_reason(plan, config: RunConfig, description=None) -> str | None:
    """Why a stored plan no longer fits the dataset's labels and regions, the config or this machine (None: reuse it)."""
    if description is not None:
        declared = ({k: list(v) for k, v in description.regions.items()}, description.regions_class_order, dict(sorted(description.labels.items())),
                    description.ignore_label)
        if declared != (plan.regions, plan.regions_class_order, dict(sorted(plan.labels.items())), plan.preprocessing.ignore_label):
            return "the dataset's labels, regions or ignore label changed"
    if plan.config != config.plan.model_dump(mode="json"):
        return "planning settings changed"
    if config.plan.device == "auto" and plan.planned_for is not None:
        from medseg.data.devices import device_profile

        here = device_profile(config.plan)
        if (here.kind, here.memory_gb, here.cores) != (plan.planned_for.kind, plan.planned_for.memory_gb, plan.planned_for.cores):
            return f"it was planned for another machine ({plan.planned_for.kind}, {plan.planned_for.name}); this one is {here.kind} {here.name}"
    return None


def prepare_cache(dataset: str | Path, config: RunConfig, progress: bool = True) -> Path:
    """Return a preprocessed cache of ``dataset`` for ``config.train.configuration``, planning and
    preprocessing on the fly when needed.

    An existing plan is reused only if it was made with the same planning settings for this kind of
    machine; otherwise the dataset is re-planned (the cache then notices the changed plan).
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
    reason = None if plan is None else _replan_reason(plan, config, description)
    if reason:
        log.info("re-planning %s: %s", plan_path, reason)
        plan = None
    if plan is None:
        plan = plan_dataset(dataset, config, plan_path, workers=config.preprocess.workers)
    name = plan.resolve(config.train.configuration)
    report = preprocess_dataset(description, plan, work / plan.cache_name(name), configuration=name,
                                workers=config.preprocess.workers, progress=progress)
    if report.failed:
        first = next(iter(report.failed.items()))
        raise MedsegError(f"{len(report.failed)} case(s) failed preprocessing, e.g. {first[0]}: {first[1]}; run `medseg dataset check {dataset}`")
    return report.cache_dir


def default_run_dir(cache_dir: Path, config: RunConfig) -> Path:
    """``runs/<dataset>/<configuration>`` (the resolved name, e.g. 3d_lowres), unless the config names one."""
    from medseg.data.cache import read_cache

    if config.run_dir:
        return Path(config.run_dir)
    plan, _ = read_cache(cache_dir)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in plan.dataset)
    return Path("runs") / safe / plan.resolve(config.train.configuration)


def parse_folds(text: str) -> list[int | str]:
    """``"0"`` -> [0]; ``"0,1,2"`` -> each in turn; ``"all"`` -> train on every case (nnU-Net's meaning)."""
    text = text.strip()
    if text == ALL_CASES:
        return [ALL_CASES]
    try:
        folds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--fold must be a fold number, a list like 0,1,2,3,4 (each in turn) or 'all' (every case), got {text!r}") from None
    if not folds or min(folds) < 0:
        raise ConfigError(f"--fold {text!r}: fold numbers start at 0")
    return folds


def fold_folder(fold: int | str) -> str:
    return f"fold_{fold}"


def train(config: RunConfig, folds: list[int | str] | None = None, resume: bool = False, progress: bool = True) -> list:
    """Train ``folds`` (default: ``config.train.fold``) one after another into ``<run_dir>/fold_<k>``
    (``fold_all`` for a model trained on every case)."""
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
        run_dir = parent / fold_folder(fold)
        fold_resume = resume and (run_dir / "checkpoint_last.pt").is_file()
        if resume and not fold_resume:
            log.info("%s has no checkpoint yet: starting it from scratch", run_dir)
        log.info("training %s into %s", "on every case" if fold == ALL_CASES else f"fold {fold}", run_dir)
        results.append(Trainer(fold_config, cache_dir, run_dir, resume=fold_resume, progress=progress).fit())
    return results

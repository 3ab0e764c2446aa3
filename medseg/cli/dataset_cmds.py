"""`medseg dataset check`, `medseg plan` and `medseg preprocess`: from a raw dataset to cached training cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from medseg.logging_setup import console, print_table

dataset_app = typer.Typer(
    help="Inspect raw datasets in the MSD or nnU-Net v2 layout (imagesTr/, labelsTr/, dataset.json).",
    no_args_is_help=True,
)

DIR_HELP = "Raw dataset folder: MSD (dataset.json with 'modality') or nnU-Net v2 (dataset.json with 'channel_names'); detected automatically."
CONFIG_HELP = "YAML config (see configs/); its 'fingerprint', 'plan' and 'preprocess' sections apply here."
SET_HELP = "Override one config value, e.g. --set plan.target_spacing=[1,1,3] (repeatable)."


def _load_config(config: Optional[Path], overrides: Optional[list[str]]):
    from medseg.config.loader import load_config

    # The full run config, so one YAML serves plan, preprocess and train alike.
    return load_config(config, list(overrides or []))


@dataset_app.command("check")
def check(
    directory: Path = typer.Argument(..., help=DIR_HELP),
    workers: int = typer.Option(2, "--workers", "-j", help="Cases read in parallel."),
    as_json: bool = typer.Option(False, "--json", help="Print the problems as JSON instead of a table."),
) -> None:
    """Validate every case and list ALL problems at once; exit code 1 if any is an error.

    Checks: image/label files exist and are readable, label grid (shape, affine) matches the
    image, channel count matches dataset.json, label values are declared, no NaN/inf voxels.
    Warnings (exit 0): empty label maps, labels stored as floats, label stored in another
    orientation than its image.

    Examples:
      medseg dataset check data/Task04_Hippocampus
      medseg dataset check my_dataset --json > problems.json
    """
    from medseg.data.check import check_dataset, has_errors

    problems = check_dataset(directory, workers=workers)
    if as_json:
        typer.echo(json.dumps([problem.to_dict() for problem in problems], indent=2))
    else:
        print_problems(problems, directory)
    if has_errors(problems):
        raise typer.Exit(code=1)


def print_problems(problems, directory: Path) -> None:
    """The problems of `medseg dataset check` as one table (or an OK line)."""
    if not problems:
        console.print(Text.assemble(("OK", "green"), f": {directory} has no problems"))
        return
    table = Table(title=f"{len(problems)} problem(s) in {directory}")
    for column in ("severity", "case", "check", "problem", "file"):
        table.add_column(column, no_wrap=column in ("case", "check", "file"), overflow="fold")
    for problem in sorted(problems, key=lambda p: (p.severity != "error", p.case, p.check)):
        style = "red" if problem.severity == "error" else "yellow"
        table.add_row(Text(problem.severity, style=style), problem.case, problem.check, problem.message, Path(problem.path).name if problem.path else "")
    print_table(table)


IMPORT_EXAMPLES = """
    Examples:
      medseg dataset import brats2015_deepmedic/ data/brats15 --preset brats2015
      medseg dataset import BraTS2021_Training_Data/ data/brats21 --preset brats2021 --link hardlink
      medseg dataset import cases/ data/mine --channel T2=*t2w*.nii.gz --channel ADC=*adc* --label *seg* \\
          --label-name 1=tumor --mask *brain_mask*
      medseg dataset import cases/ data/kid --channel CT=*img* --label *seg* --region "kidney=1,2" --region "tumor=2" --region-order 1,2

    Parallel folders (one folder per channel and one of label maps, a case's files named alike):
      medseg dataset import lidc_nodules/ data/lidc --images CT=image --labels nodule_mask --label-name 1=nodule
      medseg dataset import lidc_nodules/ data/lidc --preset lidc          (the same, by preset)
      medseg dataset import study/ data/prostate --images T2=t2 --images ADC=adc --labels seg --label-name 1=lesion
"""


@dataset_app.command("import", epilog=IMPORT_EXAMPLES)
def import_(
    source: Path = typer.Argument(..., help="Folder of case folders (one folder per case, e.g. BraTS' own releases), or the folder "
                                  "holding the parallel folders that --images/--labels name."),
    dest: Path = typer.Argument(..., help="New nnU-Net v2 dataset folder to create (imagesTr/, labelsTr/, dataset.json)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="File names of a known release: brats2015 (Flair_*/T1c_*/OTMultiClass*/brainmask*), "
                                         "brats2021 (_flair/_t1/_t1ce/_t2/_seg), brats2023 (-t2f/-t1n/-t1c/-t2w/-seg), lidc (parallel folders "
                                         "image/ + nodule_mask/, label 1 = nodule). BraTS presets add the BraTS regions."),
    images: Optional[list[str]] = typer.Option(None, "--images", help="Parallel folders: NAME=DIR, one per channel in channel order (repeat); DIR "
                                               "is inside SOURCE (or absolute) and holds one file per case. The name chooses the normalisation "
                                               "(CT: CT's). Needs --labels."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Parallel folders: the folder of label maps (inside SOURCE, or absolute), each "
                                         "named as its case's image files; names found in only some folders are refused, listed in one line."),
    channels: Optional[list[str]] = typer.Option(None, "--channel", help="NAME=PATTERN, one per channel in channel order (repeat); the glob is matched "
                                                 "case-insensitively against paths inside each case folder. Replaces the preset's channels."),
    label: Optional[str] = typer.Option(None, "--label", help="Glob of the label map in each case folder."),
    mask: Optional[str] = typer.Option(None, "--mask", help="Glob of a brain/foreground mask: image voxels outside it become 0 (so cropping and "
                                       "normalisation use it) and it is kept in masksTr/; 'none' drops a preset's mask."),
    regions: Optional[str] = typer.Option(None, "--regions", help="none, brats (the preset's BraTS regions; default with a BraTS preset), "
                                          "brats2015, brats2021 or brats2023 (region-based training and evaluation)."),
    region_defs: Optional[list[str]] = typer.Option(None, "--region", help="Custom region NAME=V,V,... (repeat, in order); needs --region-order."),
    region_order: Optional[str] = typer.Option(None, "--region-order", help="Label each region paints, in region order (nnU-Net's regions_class_order), e.g. 2,1,4."),
    label_names: Optional[list[str]] = typer.Option(None, "--label-name", help="VALUE=NAME for dataset.json (repeat); 'ignore' marks unannotated voxels. "
                                                    "Default: the preset's names, else label_<value> for each value found."),
    link: str = typer.Option("symlink", "--link", help="How files usable as they are get into DEST: symlink, hardlink or copy."),
    name: Optional[str] = typer.Option(None, "--name", help="Dataset name in dataset.json (default: DEST's folder name)."),
    allow_unlabelled: bool = typer.Option(False, "--allow-unlabelled", help="Cases without a label (a case folder without one, or a name missing only from --labels) go to imagesTs/ instead of stopping the import."),
    workers: int = typer.Option(2, "--workers", "-j", help="Cases written (and checked) in parallel."),
) -> None:
    """Build an nnU-Net v2 dataset from per-case folders or parallel folders, then run `medseg dataset check` on it.

    Nothing is written unless every case folder has exactly one file per pattern (or, with parallel
    folders, every file name is in every folder) and all of a case's files share one grid; .nii.gz
    images and integer label maps are linked, everything else is converted with its geometry kept
    exactly (float-stored label maps are checked and rounded).
    """
    from medseg.data.check import check_dataset, has_errors
    from medseg.data.importer import import_dataset, resolve_spec
    from medseg.errors import ConfigError, InputError

    if link not in ("symlink", "hardlink", "copy"):
        raise ConfigError(f"--link {link!r}: expected symlink, hardlink or copy")
    spec = resolve_spec(preset, list(channels or []), label, mask, regions, list(region_defs or []), region_order, list(label_names or []),
                        list(images or []), labels, link=link, name=name, allow_unlabelled=allow_unlabelled)
    report = import_dataset(source, dest, spec, workers=workers)
    kind = f"regions {', '.join(spec.regions)}" if spec.regions else f"labels {report.dataset_json['labels']}"
    console.print(f"{dest}: {len(report.cases)} training case(s){f', {len(report.test_cases)} test case(s)' if report.test_cases else ''}, "
                  f"channels {', '.join(n for n, _ in spec.channels)}, {kind}; {report.linked} file(s) linked, {report.converted} converted")
    problems = check_dataset(dest, workers=workers)
    print_problems(problems, dest)
    if has_errors(problems):
        import shutil

        shutil.rmtree(dest)
        raise InputError(dest, "the imported dataset fails `medseg dataset check` (problems above); it was removed")


def plan(
    directory: Path = typer.Argument(..., help=DIR_HELP),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
    device: Optional[str] = typer.Option(None, "--device", help="Machine to plan for: auto (this one: its GPU, else its CPU), cpu, cuda, "
                                         "or a preset (gpu-8gb, rtx4090, a100-40gb, a100, h100, h200, laptop, cpu-2core) [default: plan.device = auto]."),
    gpu_memory_gb: Optional[float] = typer.Option(None, "--gpu-memory-gb", help="GPU memory budget for patch and batch size [default: the GPU's, detected or from the preset]."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Plan file to write [default: medseg_work/<dataset>/plans.json]; fingerprint.json goes beside it."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Worker processes for the fingerprint [default: preprocess.workers = 2]."),
) -> None:
    """Fingerprint a dataset and choose spacing, normalization, patch/batch size and network shape.

    The plan is sized for a machine: on a GPU, patch and batch fill its memory (nnU-Net's rule);
    on a CPU, a narrower network and a per-step voxel budget buy more training steps, and large
    cases get a coarser 3d_lowres grid that `3d` then names. Every choice is written with its
    reason to a human-readable JSON plan; edit it or override from a config. The fingerprint is
    reused while the dataset files are unchanged.

    Examples:
      medseg plan data/Task04_Hippocampus
      medseg plan data/liver --device h100 -o liver_plans_h100.json     (plan here, train there)
      medseg plan data/liver --gpu-memory-gb 24
      medseg plan data/liver --set plan.target_spacing=[0.8,0.8,2.5]
    """
    overrides = list(overrides or [])
    if device is not None:
        overrides.append(f"plan.device={device}")
    if gpu_memory_gb is not None:
        overrides.append(f"plan.gpu_memory_gb={gpu_memory_gb}")
    settings = _load_config(config, overrides)  # first: a bad config fails before the planning code is even imported
    from medseg.data.config import default_work_dir
    from medseg.data.dataset import load_dataset
    from medseg.data.plan import plan_dataset

    output = output or default_work_dir(load_dataset(directory).name) / "plans.json"
    result = plan_dataset(directory, settings, output, workers=workers or settings.preprocess.workers)
    print_plan(result, training_overrides(settings))
    console.print(f"wrote {output}")


def training_overrides(settings) -> list[str]:
    """Config values that replace the planner's choices when `medseg train` runs with this config (the plan file keeps its own)."""
    chosen = {"train.configuration": settings.train.configuration if settings.train.configuration != "3d" else None,
              "train.patch_size": settings.train.patch_size, "train.batch_size": settings.train.batch_size,
              "model.name": settings.model.name if settings.model.name != "dynunet" else None,
              "model.base_features": settings.model.base_features, "model.max_features": settings.model.max_features}  # fmt: skip
    return [f"{key} = {value}" for key, value in chosen.items() if value is not None]


def print_plan(plan, overrides: list[str] = ()) -> None:
    """Every choice of a :class:`~medseg.schema.Plan` with its reason."""
    table = Table(title=f"plan for {plan.dataset} ({plan.fingerprint_summary.get('num_cases', '?')} cases)", show_header=False)
    table.add_column("choice", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    if plan.planned_for is not None:
        device = plan.planned_for
        memory = f"{device.memory_gb:g} GB {'GPU memory' if device.kind == 'cuda' else 'RAM'}"
        table.add_row("planned for", f"{device.kind}: {device.name} ({memory}, {device.cores} cores; {device.source})")
    table.add_row("target spacing", f"{[round(s, 3) for s in plan.target_spacing]} mm: {plan.target_spacing_reason}")
    for entry in plan.preprocessing.normalization:
        table.add_row(f"channel {entry.channel} ({entry.name})", f"{entry.scheme}: {entry.reason}")
    resampling = plan.preprocessing.resampling
    table.add_row("resampling", f"image order {resampling.image_order}, labels {resampling.label}")
    for name, conf in plan.configurations.items():
        grid = "" if conf.target_spacing == plan.target_spacing else f" on a {[round(s, 2) for s in conf.target_spacing]} mm grid"
        strides = conf.strides[1:] if conf.strides else "derived"
        table.add_row(f"{name} network", f"patch {conf.patch_size}{grid}, batch {conf.batch_size}, {conf.n_stages} stages, "
                      f"features {conf.features_per_stage}, strides {strides}; {conf.patch_reason}; {conf.batch_reason}"
                      + (f"; {conf.spacing_reason}" if conf.spacing_reason else ""))
    for alias, target in plan.aliases.items():
        table.add_row(f"'{alias}' means", f"{target}: {plan.alias_reasons.get(alias, '')}")
    if overrides:
        table.add_row("config overrides", f"{', '.join(overrides)}: what `medseg train` uses with this config instead of the planned values above")
    table.add_row("preprocessing identity", plan.preprocessing_hash)
    print_table(table)


def preprocess(
    directory: Path = typer.Argument(..., help=DIR_HELP),
    plan_path: Optional[Path] = typer.Option(None, "--plan", "-p", help="Plan from `medseg plan` [default: medseg_work/<dataset>/plans.json, created if missing]."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Worker processes [default: preprocess.workers = 2]."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Cache folder [default: medseg_work/<dataset>/preprocessed, or preprocessed_<spacing>mm for another grid]."),
    configuration: str = typer.Option("3d", "--configuration", help="Whose grid to cache: 3d (the plan's default 3D), 3d_fullres, 3d_lowres or 2d."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP + " Used only when the plan has to be created."),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
) -> None:
    """Reorient, crop, normalize and resample every training case into a cache of .npy arrays.

    Reruns skip finished cases; a changed plan recomputes everything (and says why). Exit code 1
    if any case failed (each failure is listed with its file).

    Examples:
      medseg preprocess data/Task04_Hippocampus
      medseg preprocess data/liver --plan liver_plans.json --cache /scratch/liver --workers 8
    """
    from medseg.data.cache import preprocess_dataset
    from medseg.data.config import default_work_dir
    from medseg.data.dataset import load_dataset
    from medseg.data.plan import load_plan, plan_dataset

    settings = _load_config(config, overrides)
    workers = workers or settings.preprocess.workers
    description = load_dataset(directory)
    work = default_work_dir(description.name)
    if plan_path is None and not (work / "plans.json").is_file():
        console.print(f"no plan given: planning first ({work / 'plans.json'})")
        current = plan_dataset(directory, settings, work / "plans.json", workers=workers)
    else:
        current = load_plan(plan_path or work / "plans.json")
        if config is not None or overrides:
            console.print(Text("note", style="yellow") + ": --config/--set only apply when a plan is created; edit the plan or re-run `medseg plan` to change it")
    name = current.resolve(configuration)
    report = preprocess_dataset(description, current, cache or work / current.cache_name(name), configuration=name, workers=workers)
    if report.invalidated:
        console.print(Text("recomputed all cases", style="yellow") + f": {report.invalidated}")
    console.print(f"{report.cache_dir}: {len(report.processed)} preprocessed, {len(report.skipped)} already done, {len(report.failed)} failed")
    if report.failed:
        table = Table(title="failed cases")
        table.add_column("case")
        table.add_column("error", overflow="fold")
        for case_id, message in sorted(report.failed.items()):
            table.add_row(case_id, message)
        print_table(table)
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")
    app.command("plan")(plan)
    app.command("preprocess")(preprocess)

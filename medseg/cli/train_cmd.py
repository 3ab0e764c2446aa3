"""`medseg train`: plan (if needed), preprocess (if needed) and train one fold or all of them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from medseg.logging_setup import console


def train(
    target: Path = typer.Argument(..., help="A raw dataset folder (MSD/nnU-Net layout), a preprocessed cache, or a config YAML whose `dataset:` names one."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (see configs/); every hyperparameter lives there."),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="Override a config value, e.g. --set train.lr=0.02 --set model.base_features=16 (repeatable)."),
    fold: Optional[str] = typer.Option(None, "--fold", "-f", help="Fold to hold out (0-4), several in turn (0,1,2,3,4), or 'all' to train on every "
                                       "case (nnU-Net's meaning; validation then runs on training cases, labelled so) [default: train.fold = 0]."),
    configuration: Optional[str] = typer.Option(None, "--configuration", help="3d (the plan's default 3D: 3d_fullres on a GPU, 3d_lowres on "
                                                "a CPU when the plan has one), 3d_fullres, 3d_lowres or 2d [default: train.configuration = 3d]."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Time budget per fold; the LR schedule follows it and training ends cleanly."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's last checkpoint (exact optimizer, RNG and epoch state); "
                                "wins over --init-from, whose weights that checkpoint already holds."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Fine-tune: start from this checkpoint (.pt), fold folder or run folder "
                                             "(its final weights, checkpoint_last.pt, else the best; of several folds fold_all, else the lowest). Weights whose name and shape "
                                             "match load into this dataset's network; new output heads for a new label set. Sets train.init_from. "
                                             "Freeze the encoder at first with --set train.freeze_encoder_epochs=N."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run folder [default: runs/<dataset>/<configuration>]; folds go into fold_<k>."),
) -> None:
    """Train a segmentation network with Dice+CE on random patches, validating on the held-out fold.

    The first run on a raw dataset plans it (spacing, normalization, patch and network) and
    preprocesses it into medseg_work/<dataset>/; later runs reuse that cache.

    Without a config, the plan sizes everything for this machine (see `medseg plan --help`).

    Examples:
      medseg train data/Task04_Hippocampus --config configs/hippocampus.yaml --max-minutes 30
      medseg train configs/synthetic.yaml --fold 0,1,2,3,4     (five folds in turn)
      medseg train brats_dataset --config configs/brats.yaml --fold all
      medseg train runs/config.yaml --resume        (after a crash or kill -9)
      medseg train data/Task04_Hippocampus --init-from runs/synthetic/3d_lowres/fold_0 --set train.freeze_encoder_epochs=5
    """
    from medseg.config.loader import load_config
    from medseg.train.api import parse_folds
    from medseg.train.api import train as run_training

    if target.suffix.lower() in (".yaml", ".yml"):
        if config is not None:
            raise typer.BadParameter("give the config either as TARGET or with --config, not both")
        config, dataset = target, None
    else:
        dataset = target
    settings = load_config(config, list(overrides or []))
    # Command-line options win over the file; assigned (not parsed) so any path is taken literally.
    if dataset is not None:
        settings.dataset = str(dataset)
    if configuration:
        settings.train.configuration = configuration
    if max_minutes:
        settings.train.max_minutes = max_minutes
    if output:
        settings.run_dir = str(output)
    if init_from is not None:
        settings.train.init_from = str(init_from)
    folds = parse_folds(fold) if fold is not None else None  # None: the config's train.fold
    for result in run_training(settings, folds, resume=resume):
        validation = result.last_validation
        scores = "" if not validation else ", ".join(f"{result.names.get(k, k)}: {v:.4f}" for k, v in validation["dice"].items()) + f" ({validation['kind']})"
        console.print(Text.assemble(("✓", "bold green"), f" {result.run_dir}: {result.epochs_done} epochs, {result.iterations_done} iterations; validation Dice {scores}"))


def register(app: typer.Typer) -> None:
    app.command()(train)

"""`medseg data synth|list|fetch`: the built-in synthetic dataset and recipes for public tumor datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from medseg.logging_setup import console, print_table

data_app = typer.Typer(
    help="Get a dataset: generate the offline synthetic CT tumor set, or download a public one (MSD, KiTS23).",
    no_args_is_help=True,
)


@data_app.command()
def synth(
    out: Path = typer.Argument(..., help="Output folder (created); gets imagesTr/, labelsTr/, dataset.json, synthetic.json."),
    cases: int = typer.Option(8, "--cases", "-n", help="Training cases (labelled)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same voxels."),
    test_cases: int = typer.Option(0, "--test-cases", help="Extra held-out cases in imagesTs/ (their labels go to labelsTs/)."),
    settings: Optional[list[str]] = typer.Option(None, "--set", help="Generator setting, e.g. --set synth.fov_mm=[128,128,96] --set synth.bias_hu=0 (see medseg.data.synthetic.SynthConfig)."),
) -> None:
    """Write a synthetic CT liver-tumor dataset in the MSD layout (labels 0 background, 1 liver, 2 tumor).

    Each case is a phantom body in world millimetres (fat, muscle, spine, aorta, spleen, liver with 0-5 hypodense or enhancing tumors, noise) sampled with its own spacing (0.7-1 mm in-plane, 1.5-5 mm slices) and stored orientation (RAS, LPS, LAS, PLS, LPI in turn). 8 cases take a few seconds and train on a laptop CPU.

    Examples:
      medseg data synth synth_ds
      medseg data synth synth_ds --cases 20 --test-cases 5 --seed 1
      medseg data synth small_ds --set synth.fov_mm=[128,128,96]
    """
    from medseg.config.loader import load_config
    from medseg.data.synthetic import make_synthetic_dataset

    config = load_config(None, list(settings or [])).synth
    folder = make_synthetic_dataset(out, cases=cases, seed=seed, test_cases=test_cases, config=config, progress=True)
    console.print(f"wrote {cases} training + {test_cases} test cases to {folder}  (next: medseg dataset check {folder})")


@data_app.command("list")
def list_cmd() -> None:
    """List the dataset recipes: name, modality, labels, cases, what is verified, license.

    Example:
      medseg data list
    """
    from medseg.data.recipes import list_recipes

    table = Table(title="dataset recipes (medseg data fetch NAME --dest DIR)")
    table.add_column("name", no_wrap=True)
    for column in ("modality", "labels", "cases", "verified", "license"):
        table.add_column(column, overflow="fold")
    for recipe in list_recipes():
        labels = ", ".join(f"{k} {v}" for k, v in recipe.labels.items() if k != "0")
        table.add_row(recipe.name, "/".join(recipe.modality.values()), labels, recipe.cases, recipe.verified, recipe.license)
    print_table(table)


@data_app.command()
def fetch(
    name: str = typer.Argument(..., help="Recipe name or alias from `medseg data list` (e.g. Task03_Liver, liver, KiTS23), or a recipe .yaml path."),
    dest: Path = typer.Option(..., "--dest", help="Folder that receives the dataset folder (and .medseg-fetch/ for partial downloads)."),
    url_override: Optional[str] = typer.Option(None, "--url-override", help="Download from this URL instead (a mirror or file:///path/Task03_Liver.tar); the recipe's checksum still applies."),
    keep_archive: bool = typer.Option(False, "--keep-archive", help="Keep the downloaded archive after extraction (default: delete it to save space)."),
    max_cases: Optional[int] = typer.Option(None, "--max-cases", min=1, help="Per-case recipes (KiTS23) only: fetch just the first N cases."),
) -> None:
    """Download a public dataset, verify it, extract it safely and lay it out as an MSD raw dataset.

    Interrupted downloads resume (rerun the same command). Archives are checked before anything is written: absolute paths, '..' and links are refused. A checksum mismatch deletes the download.

    Examples:
      medseg data fetch Task03_Liver --dest ~/datasets
      medseg data fetch liver --dest ~/datasets --url-override file:///mnt/mirror/Task03_Liver.tar
      medseg data fetch KiTS23 --dest ~/datasets --max-cases 5
    """
    from medseg.data.recipes import fetch as fetch_recipe

    folder = fetch_recipe(name, dest, url_override=url_override, keep_archive=keep_archive, max_cases=max_cases)
    console.print(f"dataset ready: {folder}  (next: medseg dataset check {folder})")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")

"""`medseg demo`: run the pipeline end to end on synthetic data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from medseg.logging_setup import console, print_table


def demo(
    out: Path = typer.Option(Path("medseg_demo"), "--out", "-o", help="Folder for everything the demo writes (safe to delete)."),
    cases: int = typer.Option(10, min=3, help="Synthetic training cases to generate."),
    test_cases: int = typer.Option(4, min=1, help="Held-back synthetic cases used for inference at the end."),
    seed: int = typer.Option(0, help="Seed of the synthetic data; the same seed gives the same data."),
    train_minutes: Optional[float] = typer.Option(None, "--train-minutes", help="Cap training time (minutes) [default: the epochs in configs/synthetic.yaml]."),
) -> None:
    """Run the whole pipeline on a built-in synthetic CT tumor dataset (no download, CPU is fine).

    Stages: synthetic dataset -> DICOM/NIfTI round trip -> dataset check -> plan -> preprocess ->
    train -> infer on the held-back cases -> evaluate -> HTML report. Each prints one line as it
    finishes, then `medseg info` of the DICOM series it wrote. About 4 minutes on 2 CPU cores.

    Open OUT/report.html at the end; OUT/run holds the trained model (use it with `medseg infer`).
    """
    from medseg.demo import DemoSettings, run_demo

    def report(name: str, summary: str, seconds: float) -> None:
        console.print(Text.assemble(("✓ ", "bold green"), (name, "bold"), f" ({seconds:.1f} s): {summary}"), highlight=False)

    state = run_demo(DemoSettings(out_dir=out, cases=cases, test_cases=test_cases, seed=seed, train_minutes=train_minutes), on_stage=report)
    info = state.facts.get("info")
    if info:
        table = Table(title="medseg info of the demo DICOM series", show_header=False)
        for key in ("format", "shape", "spacing_mm", "orientation", "origin_ras_mm", "dtype", "intensity_range", "modality", "series_description"):
            table.add_row(key, str(info.get(key)))
        print_table(table)
    console.print(f"Everything is in {out.resolve()}")


def register(app: typer.Typer) -> None:
    app.command()(demo)

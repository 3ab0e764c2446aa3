"""`medseg bench ...`: reproducible speed/memory measurements whose results go under reports/."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medseg.logging_setup import console

bench_app = typer.Typer(help="Measure speed and memory; write the numbers as JSON (commit them under reports/ with the machine).", no_args_is_help=True)


@bench_app.command("train")
def bench_train(
    target: Path = typer.Argument(..., help="Raw dataset folder or preprocessed cache."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (patch, batch, model...)."),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="Override a config value (repeatable)."),
    iterations: int = typer.Option(30, help="Timed training steps (after 5 warm-up steps)."),
    output: Path = typer.Option(Path("bench_train.json"), "--output", "-o", help="JSON result file."),
) -> None:
    """Training steps/s, time per step and data-loader wait per step (does the loader keep the device busy?).

    Example:
      medseg bench train ../shared/data/msd_hippocampus --config configs/hippocampus.yaml -o reports/bench_train_cpu.json
    """
    from medseg.run_config import load_run_config
    from medseg.train.api import prepare_cache
    from medseg.train.bench import bench_train as run

    settings = load_run_config(config, list(overrides or []))
    settings.dataset = str(target)
    result = run(settings, prepare_cache(target, settings), iterations=iterations, out_json=output)
    console.print_json(data=result)


def register(app: typer.Typer) -> None:
    from medseg.cli import evaluate_cmd, infer_cmd

    infer_cmd.register_bench(bench_app)
    evaluate_cmd.register_bench(bench_app)
    app.add_typer(bench_app, name="bench")

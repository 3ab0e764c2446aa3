"""`medseg export onnx MODEL -o OUT`: the model's fold networks as ONNX files for ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from medseg.errors import ConfigError
from medseg.logging_setup import print_table

export_app = typer.Typer(help="Export a trained model for other runtimes.", no_args_is_help=True)


@export_app.command("onnx")
def onnx(
    model: Path = typer.Argument(..., help="A checkpoint (.pt), a run folder (its final weights; see --checkpoint), or a folder of fold_* run folders."),
    out: Path = typer.Option(..., "--out", "-o", help="model.onnx for a single network; a folder for several folds (one fold_<k>.onnx each)."),
    exporter: str = typer.Option("auto", "--exporter", help="auto (TorchScript, else dynamo), torchscript, or dynamo (torch.export)."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default: 17 with TorchScript, the exporter's own with dynamo)."),
    tolerance: float = typer.Option(1e-3, "--tolerance", help="Largest |ONNX - PyTorch| logit difference accepted, relative to the logits' magnitude."),
    force: bool = typer.Option(False, "--force", help="Write the file even when ONNX Runtime disagrees with PyTorch beyond --tolerance (with a warning)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the export check (default: all cores)."),
    checkpoint: str = typer.Option("final", "--checkpoint", help="Which weights of a run folder (each fold): final (checkpoint_last.pt, "
                                   "the weights training ended with) or best (checkpoint_best.pt), as `medseg infer --checkpoint`."),
    replace: bool = typer.Option(False, "--replace", help="Delete the output folder's other .onnx files (stale folds of an earlier export) "
                                                         "once the new files are in place, instead of refusing the folder."),
) -> None:
    """Export every fold network with dynamic batch and spatial axes, plan, labels, normalisation,
    patch size and model id in the file's metadata, after checking ONNX Runtime against PyTorch on
    random windows (refused when they disagree). A lesion_instances model keeps its lesion-centre
    head (a second output), so ONNX inference writes the same instance files and confidences.

    An output folder gets one fold_<k>.onnx per network, and `medseg infer` averages every .onnx
    file of a folder. So a folder that already holds other .onnx files (say fold_3.onnx of an
    earlier 5-fold export) is refused before any work; --replace deletes them instead. Files of
    the same names are overwritten, all together once every fold passed its check.

    Needs the optional packages: pip install medseg\\[onnx].

    Examples:
      medseg export onnx runs/liver/fold_0 -o liver.onnx
      medseg export onnx runs/liver_5folds -o liver_onnx/
      medseg export onnx runs/liver_3folds -o liver_onnx/ --replace
    """
    from medseg.export.onnx import export_onnx

    if exporter not in ("auto", "torchscript", "dynamo"):
        raise ConfigError(f"--exporter {exporter!r} is not an exporter; use auto, torchscript or dynamo")
    if checkpoint not in ("final", "best"):
        raise ConfigError(f"--checkpoint {checkpoint!r}: use final or best")
    exported = export_onnx(model, out, opset=opset, tolerance=tolerance, allow_mismatch=force, threads=threads, exporter=exporter,
                           replace=replace, checkpoint=checkpoint)
    table = Table(title=f"ONNX export of {model}")
    for column in ("fold", "file", "MB", "max |ONNX - torch| logit", "argmax agreement", "s"):
        table.add_column(column)
    for item in exported:
        table.add_row("-" if item.fold is None else str(item.fold), str(item.path), f"{item.path.stat().st_size / 1e6:.1f}",
                      f"{item.max_abs_diff:.2g}", f"{item.argmax_agreement:.5f}", f"{item.seconds:.1f}")
    print_table(table)


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")

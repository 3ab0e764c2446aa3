"""`medseg report`: one self-contained HTML (optionally PDF) report of a `medseg evaluate` folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medseg.logging_setup import console

SET_HELP = ("Override a report setting, e.g. --set report.panel_height_px=400 --set report.modality=MR --set report.plot_metrics=\\[dice,hd95] "
            "(see medseg.report.config). Defaults: the settings `medseg evaluate` saved in EVAL_DIR (config.yaml), then --config.")


def report(
    eval_dir: Path = typer.Argument(..., help="Folder written by `medseg evaluate -o` (summary.json, cases.csv, lesions.csv)."),
    out: Path = typer.Option(..., "--out", "-o", help="HTML file to write, e.g. report.html (one file, images inline; the PDF goes beside it)."),
    images: Optional[Path] = typer.Option(
        None, "--images", "-i",
        help="Images for the overlays: a folder matched by case id (case.nii.gz, case_0000.nii.gz or a DICOM folder case/), "
        "or one image (file or DICOM folder) for a single-case evaluation. Default: masks only.",
    ),  # fmt: skip
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model that made the predictions (medseg run folder or checkpoint .pt), for the model summary."),
    pred: Optional[Path] = typer.Option(None, "--pred", help="Prediction file/folder, if moved since `medseg evaluate` (default: the path recorded in summary.json)."),
    gt: Optional[Path] = typer.Option(None, "--gt", help="Reference file/folder, if moved since `medseg evaluate`."),
    title: Optional[str] = typer.Option(None, "--title", help="Report title (default: 'Segmentation evaluation report')."),
    note: list[str] = typer.Option([], "--note", help="A paragraph shown under the title (repeatable), e.g. what the reference is."),
    max_cases: Optional[int] = typer.Option(None, "--max-cases", help="Cases with overlay thumbnails, worst (lowest mean Dice) first (default: 12)."),
    pdf: bool = typer.Option(False, "--pdf", help="Also print OUT with .pdf suffix through headless Chromium (apt-get install chromium)."),
    include_phi: bool = typer.Option(
        False, "--include-phi",
        help="Also show full input paths and the identifying DICOM fields of the images (patient name/ID, dates...). "
        "Off by default: the report then shows case ids only.",
    ),  # fmt: skip
    config_file: Optional[Path] = typer.Option(None, "--config", help="Any medseg config YAML or run folder; its report: section applies."),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Write an HTML report: per-label metrics with confidence intervals, distribution plots, lesion detection,
    worst cases and overlay thumbnails (reference vs prediction contours through the largest error).

    The file is self-contained (no external links) and carries no patient identifiers unless --include-phi.

    Examples:
      medseg evaluate -p preds/ -g labelsTr/ -l dataset.json -o eval/
      medseg report eval/ -o eval/report.html --images imagesTr/ --model runs/Task04/3d_fullres
      medseg report eval/ -o report.html --pdf --max-cases 20 --title "Liver tumour model, fold 0"
    """
    from medseg.config.loader import load_config, read_yaml
    from medseg.report import build_report

    saved = eval_dir / "config.yaml"
    base = read_yaml(saved) if saved.is_file() else {}
    config = load_config(config_file, overrides, base={"report": base["report"]} if isinstance(base.get("report"), dict) else {}).report
    path = build_report(
        eval_dir, out, images=images, model=model, include_phi=include_phi, pdf=pdf, title=title,
        max_cases=max_cases, pred=pred, gt=gt, notes=note, config=config,
    )  # fmt: skip
    size_mb = path.stat().st_size / 1e6
    console.print(f"wrote {path} ({size_mb:.1f} MB)" + (f" and {path.with_suffix('.pdf')}" if pdf else ""))


def register(app: typer.Typer) -> None:
    app.command()(report)

"""`medseg info` and `medseg convert`: look at a scan, and move it between formats without losing geometry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from medseg.errors import ConfigError
from medseg.logging_setup import console, print_table

SERIES_HELP = "DICOM folders with several series: the SeriesInstanceUID or 0-based index to use (see `medseg info FOLDER`)."


def info(
    path: Path = typer.Argument(..., help="A NIfTI/NRRD/MHA/MHD file, a DICOM file, or a folder holding a DICOM series."),
    series: Optional[str] = typer.Option(None, "--series", help=SERIES_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table."),
) -> None:
    """Show shape, spacing, orientation code, origin, intensity range, dtype and modality.

    Orientation codes follow nibabel's RAS convention: "LPS" means the array's first axis runs
    towards the patient's Left, the second Posterior, the third Superior.

    Examples:
      medseg info scan.nii.gz
      medseg info dicom_folder/            (lists every series found)
      medseg info dicom_folder/ --series 1
    """
    from medseg.io.inspect import describe_path

    facts = describe_path(path, series=series)
    if as_json:
        console.print_json(json.dumps(facts))
        return
    if "series" in facts:
        table = Table(title=f"DICOM series in {path}")
        for column in ("index", "uid", "description", "modality", "slices"):
            table.add_column(column)
        for item in facts["series"]:
            table.add_row(*(str(item[key]) for key in ("index", "uid", "description", "modality", "slices")))
        print_table(table)
    if "shape" in facts:
        table = Table(title=str(path), show_header=False)
        for key, value in facts.items():
            if key not in ("series", "direction_ras") and value is not None:
                table.add_row(key, str(value))
        print_table(table)


def convert(
    source: Path = typer.Argument(..., help="Input: NIfTI/NRRD/MHA/MHD file, DICOM file, or DICOM series folder."),
    destination: Path = typer.Argument(..., help="Output file; the suffix picks the format: .nii.gz, .nii, .nrrd, .mha, .mhd."),
    series: Optional[str] = typer.Option(None, "--series", help=SERIES_HELP),
    label: bool = typer.Option(False, "--label", help="Treat the input as a label map: check it has integer values, store it as uint8/uint16."),
    to: str = typer.Option("auto", "--to", help="auto (format from the suffix) or dicom-seg: the mask as one DICOM Segmentation of --reference."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="--to dicom-seg: the DICOM series folder the mask was made on (its grid must match)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="--to dicom-seg: JSON label names (index -> name, name -> index, or a dataset.json); "
                                                                 "default: the `medseg infer` sidecar beside the mask."),
    seg_type: str = typer.Option("binary", "--seg-type", help="--to dicom-seg: binary (widest viewer support) or labelmap (compact, newer)."),
    algorithm: Optional[str] = typer.Option(None, "--algorithm", help="--to dicom-seg: algorithm name recorded in the SEG (default: the model from the sidecar)."),
) -> None:
    """Convert a scan to NIfTI/NRRD/MHA keeping every voxel's world position exactly.

    DICOM series are sorted by slice position (not file name), CT values are rescaled to HU, and
    the output is written atomically: a failure never leaves a partial file.

    Examples:
      medseg convert ct_dicom/ ct.nii.gz
      medseg convert mask.nrrd mask.nii.gz --label
      medseg convert mask.nii.gz mask_seg.dcm --to dicom-seg --reference ct_dicom/
    """
    from medseg.io.atomic import check_output_file

    check_output_file(destination)  # a folder or a missing/read-only parent fails now, not after reading the input
    if to == "dicom-seg":
        _convert_to_dicom_seg(source, destination, reference, labels, series, seg_type, algorithm)
        return
    if to != "auto":
        raise ConfigError(f"--to {to!r} is not a target; use auto (the suffix picks NIfTI/NRRD/MHA) or dicom-seg")
    from medseg.io import read_volume, write_volume

    volume = read_volume(source, role="label" if label else "image", series=series, allow_channels=True)
    write_volume(volume, destination)
    console.print(f"wrote {destination}  shape {volume.shape}  spacing {tuple(round(float(s), 4) for s in volume.spacing)}  {volume.orientation}")


def _convert_to_dicom_seg(mask: Path, out: Path, reference: Optional[Path], labels: Optional[Path], series: Optional[str],
                          seg_type: str, algorithm: Optional[str]) -> None:
    from medseg.io.dicom_seg import convert_mask_to_seg

    if reference is None:
        raise ConfigError("--to dicom-seg needs --reference SERIES_DIR, the DICOM series the mask was made on")
    if seg_type not in ("binary", "labelmap"):
        raise ConfigError(f"--seg-type {seg_type!r} is not a SEG type; use binary or labelmap")
    result = convert_mask_to_seg(mask, out, reference, labels_file=labels, series=series, algorithm_name=algorithm, segmentation_type=seg_type)
    console.print(f"wrote {out}  {len(result.segments)} segment(s) over {result.frames_referenced} referenced frames")
    if result.empty:
        console.print(f"note: {len(result.empty)} segment(s) without voxels, kept so segment numbers follow the labels: "
                      f"{', '.join(result.empty[:10])}{' ...' if len(result.empty) > 10 else ''}")


def register(app: typer.Typer) -> None:
    app.command()(info)
    app.command()(convert)

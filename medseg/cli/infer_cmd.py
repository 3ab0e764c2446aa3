"""`medseg infer MODEL INPUT -o OUT`: masks on the input's exact grid, with a JSON sidecar per case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from medseg.logging_setup import console

SET_HELP = (
    "Override any inference setting, e.g. --set infer.postprocess.liver.largest_component=true "
    "--set infer.postprocess.tumor.min_size_mm3=50 --set infer.amp=bf16 (see medseg.infer.config.InferConfig)."
)


def _flag_overrides(**flags) -> list[str]:
    """Command-line flags given explicitly -> ``infer.key=value`` overrides (flags win over --set)."""
    return [f"infer.{key}={json.dumps(value)}" for key, value in flags.items() if value is not None]


def infer(
    model: Path = typer.Argument(..., help="A checkpoint (.pt), a run folder (uses checkpoint_best.pt, else checkpoint_last.pt), "
                                            "or a folder of fold_* run folders (their softmax outputs are averaged)."),
    source: str = typer.Argument(..., metavar="INPUT", help="A NIfTI/NRRD/MHA file, a DICOM series folder, a folder of cases "
                                                            "(files and DICOM series subfolders), or a quoted glob like 'scans/*.nii.gz'."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created if needed), or a .nii.gz file name for a single case."),
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help="Mirroring test-time augmentation (8 passes in 3D). Default: on with CUDA, off on CPU."),
    overlap: Optional[float] = typer.Option(None, "--overlap", help="Sliding-window overlap, 0 to <1. Default 0.5 (nnU-Net)."),
    sw_batch_size: Optional[int] = typer.Option(None, "--sw-batch-size", help="Windows per network call. Default 4 on CUDA; on CPU ~1M voxels per call (1 window of 96^3)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (default: CUDA when present), cpu, cuda, cuda:1 ..."),
    stitch_device: Optional[str] = typer.Option(None, "--stitch-device", help="Where window outputs are accumulated: auto (default), gpu or cpu (for huge volumes)."),
    per_class: Optional[bool] = typer.Option(None, "--per-class", help="Also write one binary mask per label: OUT/<case>/<label>.nii.gz."),
    save_probabilities: Optional[bool] = typer.Option(None, "--save-probabilities", help="Also write float16 class probabilities on the input grid: OUT/<case>_probabilities.npz."),
    compile_mode: Optional[str] = typer.Option(None, "--compile", help="torch.compile the network: auto (default: on CPU when the "
                                               "run holds >= 80 windows of 96^3, where the ~18 s compile pays back), on or off."),
    series: Optional[str] = typer.Option(None, "--series", help="SeriesInstanceUID (or 0-based index) to use from a DICOM folder holding several series."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="YAML file with an 'infer:' section."),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Segment CT/MR volumes or DICOM series with a trained medseg model.

    Per case: OUT/<case>.nii.gz, labels on exactly the input's grid
    (a DICOM series keeps its world geometry), and OUT/<case>.json with
    mL and voxels per label, lesion counts, runtime and the model id.
    Preprocessing uses the plan and statistics stored in the checkpoint.
    A case that fails is reported and skipped; the exit code is then 2.

    Examples:
      medseg infer runs/liver ct.nii.gz -o masks/
      medseg infer runs/liver dicom/series_folder -o masks/ --per-class
      medseg infer runs/liver_5folds 'scans/*.nii.gz' -o masks/ --tta
      medseg infer runs/liver/checkpoint_best.pt scans/ -o masks/
        --set infer.postprocess.liver.largest_component=true
    """
    from medseg.infer import InferFailures, infer as run_inference, load_infer_config

    flags = _flag_overrides(tta=tta, overlap=overlap, sw_batch_size=sw_batch_size, device=device, stitch_device=stitch_device,
                            per_class=per_class, save_probabilities=save_probabilities, compile=compile_mode)
    config = load_infer_config(config_file, list(overrides) + flags)
    try:
        report = run_inference(model, source, out, config, series=series, progress=True)
    except InferFailures as failures:
        _print_summary(failures.report.outputs, out)
        raise
    _print_summary(report.outputs, out)


def _print_summary(outputs: dict[str, list[Path]], out: Path) -> None:
    if not outputs:
        return
    table = Table(title=f"{len(outputs)} case(s) written to {out}")
    table.add_column("case")
    table.add_column("structures (mL)")
    table.add_column("seconds")
    for name, files in list(outputs.items())[:50]:
        sidecar = next((path for path in files if path.suffix == ".json"), None)
        facts = json.loads(sidecar.read_text()) if sidecar else {}
        volumes = ", ".join(f"{label} {entry['volume_ml']:.1f}" + (f" ({entry['lesions']} lesions)" if "lesions" in entry else "")
                            for label, entry in facts.get("labels", {}).items() if entry["voxels"])
        table.add_row(name, volumes[:120] or "-", f"{facts.get('runtime_s', {}).get('total', float('nan')):.1f}")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(infer)


def bench_infer_command(
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Checkpoint or run folder; default: a randomly initialised DynUNet (16 base features, patch 96^3, 3 mm) saved as a checkpoint."),
    inputs: list[Path] = typer.Option([], "--input", "-i", help="CT volume(s) to time; repeatable. Default: ../shared/data/totalseg_example/ct/example_ct.nii.gz if present."),
    synthetic: bool = typer.Option(True, "--synthetic/--no-synthetic", help="Also time a synthetic 512x512x300 CT."),
    out: Path = typer.Option(Path("reports/infer_benchmark_cpu.json"), "--out", "-o", help="JSON results (a markdown table is written beside it)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    classes: list[int] = typer.Option([3], "--classes", help="Output classes of the default network (incl. background); repeat to time several."),
    repeats: int = typer.Option(1, "--repeats", help="Alternating runs per pipeline; the best time is reported (other load only adds time)."),
    amp: str = typer.Option("off", "--amp", help="off or bf16 (bfloat16 autocast for both networks)."),
    image_order: int = typer.Option(3, "--image-order", help="Image interpolation of the default model's plan: 3 (cubic, medseg's default) or 1 (linear, as MONAI's Spacingd)."),
    compile_mode: str = typer.Option("auto", "--compile", help="medseg's infer.compile: auto, on or off (MONAI runs eager)."),
) -> None:
    """medseg vs a plain MONAI pipeline (same network, weights, overlap 0.5, Gaussian blending), each in its own process.

    Reports wall time and peak RAM (RSS) of both. Goal: medseg >= 2x faster with <= 0.5x the peak RAM.
    Writes OUT (JSON) and a markdown table beside it.

    Examples:
      medseg bench infer
      medseg bench infer --classes 3 --classes 14 --repeats 2 -o reports/infer_benchmark_cpu.json
      medseg bench infer --model runs/liver --input ct.nii.gz --no-synthetic --device cuda -o reports/infer_benchmark_gpu.json
    """
    from medseg.infer.bench import bench_infer

    result = bench_infer(model, inputs or None, out_json=out, device=device, synthetic=synthetic, classes=classes, repeats=repeats,
                         amp=amp, image_order=image_order, compile_mode=compile_mode)
    for row in result["cases"]:
        console.print(f"{row['input']} ({row['classes'] or 'model'} classes): medseg {row['medseg']['seconds']:.1f} s / {row['medseg']['peak_rss_mb']:.0f} MB, "
                      f"MONAI {row['monai']['seconds']:.1f} s / {row['monai']['peak_rss_mb']:.0f} MB: "
                      f"{row['speedup']:.2f}x faster, {row['ram_ratio']:.2f}x the RAM, mask agreement Dice {row['agreement_dice']:.4f}")


def register_bench(bench_app: typer.Typer) -> None:
    """Add ``infer`` to a ``medseg bench`` command group."""
    bench_app.command("infer")(bench_infer_command)

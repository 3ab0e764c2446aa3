"""`medseg bench ...`: reproducible speed, memory and accuracy measurements (medseg.bench); results go where -o says."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medseg.logging_setup import console

bench_app = typer.Typer(help="Measure speed, memory and accuracy; write the numbers as JSON and markdown (commit them under reports/ with the machine).",
                        no_args_is_help=True)


@bench_app.command("train")
def bench_train(
    target: Path = typer.Argument(..., help="Raw dataset folder or preprocessed cache."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (patch, batch, model...)."),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="Override a config value (repeatable), e.g. --set train.channels_last=true."),
    iterations: int = typer.Option(30, help="Timed training steps (after 5 warm-up steps)."),
    output: Path = typer.Option(Path("bench_train.json"), "--output", "-o", help="JSON result file."),
) -> None:
    """Training steps/s, time per step and data-loader wait per step (does the loader keep the device busy?).

    Example:
      medseg bench train ../shared/data/msd_hippocampus --config configs/hippocampus.yaml -o reports/bench_train_cpu.json
    """
    from medseg.bench.train import bench_train as run
    from medseg.config.loader import load_config
    from medseg.train.api import prepare_cache

    settings = load_config(config, list(overrides or []))
    settings.dataset = str(target)
    result = run(settings, prepare_cache(target, settings), iterations=iterations, out_json=output)
    console.print(f"{result['configuration']} patch {result['patch_size']} x batch {result['batch_size']} on {result['device']}: "
                  f"{result['step_s_median']:.3f} s/step (median), loader wait {result['loader_wait_share']:.0%} of the time")


@bench_app.command("infer")
def bench_infer_command(
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Checkpoint or run folder; default: a randomly initialised DynUNet (16 base features, patch 96^3, 3 mm) saved as a checkpoint."),
    inputs: list[Path] = typer.Option([], "--input", "-i", help="CT volume(s) to time; repeatable. Default: the example CT of $MEDSEG_TEST_DATA if present."),
    synthetic: bool = typer.Option(True, "--synthetic/--no-synthetic", help="Also time a synthetic 512x512x300 CT."),
    out: Path = typer.Option(Path("infer_benchmark.json"), "--out", "-o", help="JSON results (a markdown table is written beside it)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    classes: list[int] = typer.Option([3], "--classes", help="Output classes of the default network (incl. background); repeat to time several."),
    repeats: int = typer.Option(1, "--repeats", help="Alternating runs per pipeline; the best time is reported (other load only adds time)."),
    amp: str = typer.Option("off", "--amp", help="off or bf16 (bfloat16 autocast for every pipeline's network)."),
    image_order: int = typer.Option(3, "--image-order", help="Image interpolation of the default model's plan: 3 (cubic, medseg's default) or 1 (linear, as MONAI's Spacingd)."),
    compile_mode: str = typer.Option("auto", "--compile", help="medseg's infer.compile: auto, on or off (MONAI runs eager)."),
    peers: list[str] = typer.Option(["monai"], "--peer", help="MONAI pipelines to compare with: monai (the tutorial pipeline) and/or "
                                    "monai-expert (float32 Spacingd, argmax on the model grid, nearest Invertd); repeatable."),
) -> None:
    """medseg vs MONAI pipelines (same network, weights, overlap 0.5, Gaussian blending), each in its own process.

    Reports wall time and peak RAM (RSS) of every pipeline and their ratios.
    Writes OUT (JSON) and a markdown table beside it.

    Examples:
      medseg bench infer -o reports/infer_benchmark_cpu.json
      medseg bench infer --peer monai --peer monai-expert --classes 3 --classes 14 --repeats 3 -o reports/infer_benchmark_cpu.json
      medseg bench infer --model runs/liver --input ct.nii.gz --no-synthetic --device cuda -o reports/infer_benchmark_gpu.json
    """
    from medseg.bench.infer import bench_infer

    result = bench_infer(model, inputs or None, out_json=out, device=device, synthetic=synthetic, classes=classes, repeats=repeats,
                         amp=amp, image_order=image_order, compile_mode=compile_mode, peers=peers)
    for row in result["cases"]:
        line = f"{row['input']} ({row['classes'] or 'model'} classes): medseg {row['medseg']['seconds']:.1f} s / {row['medseg']['peak_rss_mb']:.0f} MB"
        for peer in row["peers"]:
            line += (f"; {peer} {row[peer]['seconds']:.1f} s / {row[peer]['peak_rss_mb']:.0f} MB: {row['ratios'][peer]['speedup']:.2f}x faster, "
                     f"{row['ratios'][peer]['ram_ratio']:.2f}x the RAM, masks Dice {row['ratios'][peer]['agreement_dice']:.4f}")
        console.print(line)


@bench_app.command("evaluate")
def bench_evaluate_command(
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the timings as JSON here."),
    repeats: int = typer.Option(3, help="Runs to time; the best is reported."),
    with_io: bool = typer.Option(True, "--with-io/--no-io", help="Also time the whole evaluate() on the pair saved as .nii.gz (reading and writing included)."),
) -> None:
    """Time the evaluation of a synthetic 512x512x300 case with 10 labels, on one core.

    Example:
      medseg bench evaluate -o bench_evaluate.json
    """
    from medseg.bench.evaluate import bench_evaluate

    result = bench_evaluate(repeats=repeats, with_io=with_io, out_json=out)
    line = f"evaluate {'x'.join(map(str, result['shape']))}, {result['labels']} labels: best {result['seconds_best']:.2f} s in memory"
    if "seconds_with_io" in result:
        line += f", {result['seconds_with_io']:.2f} s with .nii.gz reading and writing"
    console.print(line)


@bench_app.command("architectures")
def bench_architectures_command(
    dataset: Path = typer.Argument(..., help="Raw dataset folder (MSD layout), e.g. ../shared/data/msd_hippocampus."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config shared by every architecture (plan, patch, batch, widths)."),
    minutes: float = typer.Option(10.0, "--minutes", help="Training budget per architecture (wall clock)."),
    model: list[str] = typer.Option([], "--model", "-m", help="Architectures to train (repeatable); default: every registered one."),
    overrides: list[str] = typer.Option([], "--set", help="Config override section.key=value for every run (repeatable)."),
    infer_cases: int = typer.Option(5, "--infer-cases", help="Held-out cases timed with `medseg infer` per architecture."),
    out: Path = typer.Option(Path("architectures.json"), "--out", "-o", help="JSON results; the markdown table is written beside it."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Keep the run folders here (default: a temporary folder, removed)."),
) -> None:
    """Train every registered architecture for the same budget on one dataset and compare them: validation Dice
    per label, parameters, s/step, iterations reached and inference seconds per case, in one table.

    Examples:
      medseg bench architectures ../shared/data/msd_hippocampus -c configs/hippocampus.yaml --minutes 10 -o reports/architectures.json
      medseg bench architectures DATA -m dynunet -m fcn --minutes 2 --set train.fold=1
    """
    from medseg.bench.architectures import bench_architectures

    result = bench_architectures(dataset, out, config, minutes, model or None, overrides, infer_cases, work_dir)
    console.print(out.with_suffix(".md").read_text() if out.with_suffix(".md").is_file() else f"{len(result['rows'])} rows")


@bench_app.command("gpu")
def bench_gpu_command(
    out: Path = typer.Option(Path("reports/gpu_benchmark.json"), "--out", "-o", help="JSON results; the markdown table is written beside it."),
    data: Optional[Path] = typer.Option(None, "--data", help="Shared test data folder (msd_hippocampus for the accuracy run) [default: $MEDSEG_TEST_DATA or ../shared/data]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Run every stage tiny and on the CPU: checks the bench itself (the tests use this)."),
    minutes: float = typer.Option(5.0, "--minutes", help="GPU training budget of the accuracy run on msd_hippocampus."),
    skip: list[str] = typer.Option([], "--skip", help="Stages to leave out: tests, resume, resume_compiled, ddp, accuracy, throughput, inference (repeatable)."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Keep every stage's data, caches and run folders here (default: a temporary folder, removed)."),
    step_options: bool = typer.Option(False, "--step-options", help="Also time each training-step option alone against the defaults: fp32, channels_last_3d, foreach optimizer, eager (about 1.5 minutes more)."),
) -> None:
    """The one benchmark a lent CUDA GPU runs, in about 8 minutes: correctness, training throughput,
    5-minute accuracy on MSD Hippocampus, and inference of a 512x512x300 CT.

    Stages: the `gpu` test marker; a short CUDA training killed with SIGKILL and resumed (weights
    must equal an uninterrupted run's), eager and with torch.compile on (the CUDA default); a world-size-1 NCCL DDP run; fold-0 validation Dice after
    `--minutes` of training on folds 1-4 (started first, in the background, beside those three);
    then, on an idle GPU, iterations/s, GPU utilisation and loader-wait share for the hippocampus
    plan and a CT-like 128^3 plan, and seconds per CT, cold and warm, per stage, TTA off and on.
    Without CUDA it stops with one line (or runs `--dry-run`).

    Examples:
      medseg bench gpu                        (on the GPU machine; writes reports/gpu_benchmark.json and .md)
      medseg bench gpu --dry-run -o /tmp/gpu_dry.json
    """
    from medseg.bench.gpu import bench_gpu

    result = bench_gpu(out, data_dir=data, dry_run=dry_run, minutes=minutes, skip=list(skip), work_dir=work_dir, step_options=step_options)
    console.print(result["table"])
    console.print(f"wrote {out} and {Path(out).with_suffix('.md')}")


peer_app = typer.Typer(help="medseg beside another tool on the same cases, fold, wall-clock budget and machine, in one run.",
                       no_args_is_help=True)
bench_app.add_typer(peer_app, name="peer")


@peer_app.command("nnunet")
def bench_peer_nnunet_command(
    dataset: Path = typer.Argument(..., help="Raw dataset folder (MSD or nnU-Net layout), e.g. ../shared/data/msd_hippocampus."),
    minutes: float = typer.Option(30.0, "--minutes", help="Training budget of each tool (wall clock, from its first iteration)."),
    fold: int = typer.Option(0, "--fold", "-f", help="medseg's held-out fold; nnU-Net gets the same split as splits_final.json."),
    out: Path = typer.Option(Path("reports/peer_nnunet.md"), "--out", "-o", help="Markdown table; the JSON is written beside it (.json)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="medseg config YAML (default: none, as `medseg train DATA` without -c: planned for this machine)."),
    overrides: list[str] = typer.Option([], "--set", help="medseg config override section.key=value (repeatable)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda, for both tools."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Keep caches, runs, nnU-Net folders, predictions and logs here (default: a temporary folder, removed)."),
    peers_dir: Optional[Path] = typer.Option(None, "--peers-dir", help="Where nnunetv2 is installed (default: $MEDSEG_PEERS_DIR, else medseg_peers/)."),
    install: bool = typer.Option(True, "--install/--no-install", help="Install the pinned nnunetv2 (pip --no-deps, into --peers-dir) when it is missing."),
    tta: list[str] = typer.Option(["off", "on"], "--tta", help="Mirroring TTA settings to predict with, off and/or on (repeatable)."),
    planner: str = typer.Option("ExperimentPlanner", "--nnunet-planner", help="nnU-Net experiment planner: its default ExperimentPlanner, or nnUNetPlannerResEncM/L/XL."),
    nnunet_configuration: str = typer.Option("3d_fullres", "--nnunet-configuration", help="nnU-Net configuration to train (3d_fullres, 2d, 3d_lowres)."),
) -> None:
    r"""nnU-Net v2 (pinned) and medseg on the same held-out cases, fold, budget and machine; one table of Dice and
    HD95 per label (both scored by medseg's evaluation), iterations, s/iteration and inference s/case, TTA off and on.

    The tools run one after the other, each alone with the full budget. medseg runs `medseg train` (its default
    config, or -c) with --max-minutes, then `medseg infer`; nnU-Net runs its own fingerprint, plans, preprocessing,
    default trainer (only its poly LR on the wall clock) and predictor with the final checkpoint. nnunetv2 needs
    `pip install 'medseg\[peers]'`; the bench installs nnunetv2 itself with --no-deps beside your torch.

    Examples:
      medseg bench peer nnunet ../shared/data/msd_hippocampus --minutes 30 --fold 0 -o reports/peer_nnunet_cpu.md
      medseg bench peer nnunet DATA -c configs/hippocampus.yaml --minutes 5 --device cuda -o reports/peer_nnunet_gpu.md
    """
    from medseg.bench.peers.nnunet import bench_peer_nnunet

    settings = {"off": False, "on": True}
    if any(value not in settings for value in tta):
        raise typer.BadParameter(f"--tta takes off or on, got {', '.join(tta)}")
    bench_peer_nnunet(dataset, out, minutes=minutes, fold=fold, config=config, overrides=list(overrides), device=device, work_dir=work_dir,
                      peers_dir=peers_dir, install=install, tta=tuple(dict.fromkeys(settings[value] for value in tta)), planner=planner,
                      configuration=nnunet_configuration)
    console.print(out.with_suffix(".md").read_text())
    console.print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")

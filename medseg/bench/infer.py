"""`medseg bench infer`: medseg's inference against a plain MONAI pipeline, side by side.

Both pipelines get the same network and weights (one medseg checkpoint), the same window, overlap
(0.5), Gaussian blending and sliding-window batch, no TTA, the same CPU threads, and each runs in
its own process (:mod:`medseg.infer.bench_runner`) so that peak memory is measured per pipeline.
Without a model, a randomly initialised DynUNet is saved as a checkpoint: weights do not change
the cost of inference, and the plan is a TotalSegmentator-"fast"-like CT setting (3 mm isotropic,
patch 96^3, 16 base features). Random weights make the two masks' agreement a weak check only
(near-tied logits flip under the pipelines' different interpolation), so it is reported, not
asserted.

Cases: the example CT of the shared test data (``$MEDSEG_TEST_DATA/totalseg_example/ct/example_ct.nii.gz``)
when present, and a synthetic 512 x 512 x 300 CT (0.8 x 0.8 x 1.5 mm, stored LPS like a DICOM conversion).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medseg.bench.common import load_average, machine_info, shared_data_file
from medseg.errors import ConfigError
from medseg.infer.outputs import safe_name
from medseg.io import Volume, read_volume, write_volume
from medseg.io.atomic import write_text
from medseg.schema.plan import Plan

log = logging.getLogger(__name__)

EXAMPLE_CT_RELATIVE = Path("totalseg_example/ct/example_ct.nii.gz")
CT_NORMALIZATION = {"channel": 0, "name": "CT", "modality": "CT", "scheme": "ct", "clip": [-1000.0, 1500.0], "mean": 40.0, "std": 350.0}


def benchmark_plan(classes: int, spacing: Sequence[float] = (3.0, 3.0, 3.0), patch: Sequence[int] = (96, 96, 96), image_order: int = 3) -> Plan:
    """A minimal medseg plan: CT normalization, target spacing, one 3D configuration."""
    return Plan.model_validate({
        "dataset": "benchmark", "labels": {k: ("background" if k == 0 else f"class_{k}") for k in range(classes)},
        "target_spacing": list(spacing),
        "preprocessing": {
            "target_spacing": list(spacing), "num_channels": 1, "labels": list(range(classes)), "normalization": [dict(CT_NORMALIZATION)],
            "resampling": {"image_order": image_order, "label": "per_class_linear", "separate_axis_ratio": 3.0, "out_of_plane_order": 0},
            "class_locations_per_class": 100,
        },
        "configurations": {"3d_fullres": {"patch_size": list(patch), "spacing": list(spacing), "batch_size": 2}},
        "aliases": {"3d": "3d_fullres"},
    })


def build_benchmark_checkpoint(path: str | Path, classes: int = 3, base_features: int = 16, max_features: int = 256,
                               patch: Sequence[int] = (96, 96, 96), spacing: Sequence[float] = (3.0, 3.0, 3.0), seed: int = 0,
                               image_order: int = 3) -> Path:
    """Save a randomly initialised DynUNet with a plan as an inference checkpoint (the format `medseg train` writes)."""
    import torch

    from medseg.config.schema import RunConfig
    from medseg.models.registry import build_model
    from medseg.train.checkpoint import inference_checkpoint, save_checkpoint

    plan = benchmark_plan(classes, spacing, patch, image_order)
    config = RunConfig.model_validate({"model": {"name": "dynunet", "base_features": base_features, "max_features": max_features}})
    configuration = plan.configuration("3d")
    torch.manual_seed(seed)
    network = build_model(config.model, 1, classes, configuration.network_plan())
    return save_checkpoint(path, inference_checkpoint(network, config, plan, configuration, in_channels=1))


def synthetic_ct(path: str | Path, shape: Sequence[int] = (512, 512, 300), spacing: Sequence[float] = (0.8, 0.8, 1.5), seed: int = 0) -> Path:
    """A CT-like int16 volume: air, an elliptical body with fat, soft tissue, organs, spine and noise; stored LPS."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = (int(s) for s in shape)
    x = (np.arange(nx, dtype=np.float32) - nx / 2) * spacing[0]
    y = (np.arange(ny, dtype=np.float32) - ny / 2) * spacing[1]
    z = np.arange(nz, dtype=np.float32) * spacing[2]
    image = np.full((nx, ny, nz), -1000, dtype=np.int16)
    xx, yy = np.meshgrid(x, y, indexing="ij")
    for k in range(nz):
        scale = 1.0 + 0.1 * np.sin(z[k] / 80.0)
        body = (xx / (170 * scale)) ** 2 + (yy / (120 * scale)) ** 2
        plane = np.where(body < 1, np.where(body > 0.8, -90, 45), -1000).astype(np.float32)
        plane[((xx - 60) / 80) ** 2 + ((yy + 10) / 60) ** 2 + ((z[k] - 200) / 90) ** 2 < 1] = 60  # liver
        plane[((xx + 70) / 35) ** 2 + ((yy + 20) / 30) ** 2 + ((z[k] - 230) / 50) ** 2 < 1] = 50  # spleen
        plane[(xx / 18) ** 2 + ((yy - 70) / 18) ** 2 < 1] = 400  # vertebra
        plane[((xx - 20) / 12) ** 2 + ((yy - 40) / 12) ** 2 < 1] = 180  # aorta
        image[:, :, k] = np.clip(plane + rng.normal(0, 15, plane.shape).astype(np.float32), -1024, 3071).astype(np.int16)
    affine = np.diag([*(float(s) for s in spacing), 1.0])
    affine[:3, 3] = [-x[-1] / 2, -y[-1] / 2, -200.0]
    return write_volume(Volume(image, affine, "image", {"modality": "CT"}).reoriented("LPS"), path)


def _run(pipeline: str, spec: dict[str, Any], work: Path) -> dict[str, Any]:
    spec_path, result_path = work / f"{pipeline}_spec.json", work / f"{pipeline}_result.json"
    write_text(spec_path, json.dumps(spec))
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "medseg.bench.infer_runner", pipeline, str(spec_path), str(result_path)],
                               capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{pipeline} benchmark process failed:\n{completed.stderr[-3000:]}")
    result = json.loads(result_path.read_text())
    result["process_s"] = time.perf_counter() - started
    return result


def _agreement(medseg_mask: str, monai_mask: str) -> dict[str, float]:
    a, b = read_volume(medseg_mask, role="label").reoriented("RAS"), read_volume(monai_mask, role="label").reoriented("RAS")
    if a.shape != b.shape or not np.allclose(a.affine, b.affine, atol=1e-3):
        return {"dice": float("nan"), "voxel_agreement": float("nan"), "same_grid": False}
    foreground = [k for k in np.union1d(np.unique(a.array), np.unique(b.array)) if k > 0]
    dices = [2 * np.sum((a.array == k) & (b.array == k)) / max(np.sum(a.array == k) + np.sum(b.array == k), 1) for k in foreground]
    return {"dice": float(np.mean(dices)) if dices else 1.0, "voxel_agreement": float(np.mean(a.array == b.array)), "same_grid": True}


#: The MONAI pipelines medseg is compared with (see :mod:`medseg.bench.infer_runner`).
PEERS = ("monai", "monai-expert")


def _ratios(medseg: dict[str, Any], peer: dict[str, Any]) -> dict[str, float]:
    agreement = _agreement(medseg["mask"], peer["mask"])
    return {"speedup": peer["seconds"] / medseg["seconds"], "ram_ratio": medseg["peak_rss_mb"] / peer["peak_rss_mb"],
            "agreement_dice": agreement["dice"], "agreement_voxels": agreement["voxel_agreement"]}


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Best-of-N time (other processes on a shared machine only ever add time) and the largest peak RSS."""
    best = min(runs, key=lambda run: run["seconds"])
    return {**best, "seconds_all": [round(run["seconds"], 2) for run in runs], "seconds_median": float(np.median([run["seconds"] for run in runs])),
            "peak_rss_mb": max(run["peak_rss_mb"] for run in runs)}


def bench_infer(
    model: str | Path | None = None,
    inputs: list[Path] | None = None,
    synthetic_shape: Sequence[int] = (512, 512, 300),
    out_json: str | Path | None = None,
    device: str = "cpu",
    *,
    synthetic: bool = True,
    classes: int | Sequence[int] = 3,
    repeats: int = 1,
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    amp: str = "off",
    image_order: int = 3,
    compile_mode: str = "auto",
    work_dir: str | Path | None = None,
    peers: Sequence[str] = ("monai",),
) -> dict[str, Any]:
    """Time medseg and MONAI on each input, each run in its own process, alternating ``repeats`` times.

    Without ``model``, one random DynUNet checkpoint is built per entry of ``classes``, with a plan
    that resamples images with spline order ``image_order`` (3 = medseg's default, cubic; 1 = linear,
    the same interpolation as MONAI's ``Spacingd(mode="bilinear")``). ``amp="bf16"`` runs both
    networks under bfloat16 autocast. Writes JSON and a markdown table beside it when ``out_json``
    is given.
    """
    checks = {"amp": (amp, ("off", "bf16")), "image_order": (image_order, (1, 3)), "compile": (compile_mode, ("auto", "on", "off"))}
    for name, (value, allowed) in checks.items():
        if value not in allowed:
            raise ConfigError(f"bench infer: {name} must be one of {', '.join(map(str, allowed))}, got {value!r}")
    peers = list(dict.fromkeys(peers))
    unknown = [peer for peer in peers if peer not in PEERS]
    if unknown or not peers:
        raise ConfigError(f"bench infer: --peer must be one of {', '.join(PEERS)}, got {', '.join(unknown) or 'none'}")
    example = shared_data_file(EXAMPLE_CT_RELATIVE)
    if not inputs and not synthetic and example is None:
        raise ConfigError(f"bench infer: nothing to time: no {EXAMPLE_CT_RELATIVE} under $MEDSEG_TEST_DATA (give --input) "
                          "and --no-synthetic was given")
    class_counts = [classes] if isinstance(classes, int) else list(classes)
    with tempfile.TemporaryDirectory(prefix="medseg_bench_infer_") as temporary:
        work = Path(work_dir or temporary)
        work.mkdir(parents=True, exist_ok=True)
        models = ([(None, Path(model))] if model is not None else
                  [(count, build_benchmark_checkpoint(work / f"benchmark_model_{count}_classes_order{image_order}.pt", classes=count,
                                                                 image_order=image_order)) for count in class_counts])
        cases = [Path(p) for p in inputs] if inputs else ([example] if example is not None else [])
        if synthetic:
            shape = tuple(int(s) for s in synthetic_shape)
            cases.append(synthetic_ct(work / f"synthetic_ct_{'x'.join(map(str, shape))}.nii.gz", shape))
        rows = []
        for count, model_path in models:
            for case in cases:
                source = read_volume(case)
                row: dict[str, Any] = {"input": case.name, "classes": count, "image_order": None if model else image_order, "amp": amp,
                                       "compile": compile_mode,
                                       "shape": list(source.shape),
                                       "spacing_mm": [round(float(s), 4) for s in source.spacing], "orientation": source.orientation,
                                       "load_average_before": load_average()}
                del source
                pipelines = ["medseg", *peers]
                runs: dict[str, list[dict[str, Any]]] = {pipeline: [] for pipeline in pipelines}
                for repeat in range(repeats):
                    for pipeline in pipelines if repeat % 2 == 0 else pipelines[::-1]:
                        spec = {"model": str(model_path), "input": str(case), "out_dir": str(work / f"{pipeline}_{count}_{safe_name(case.name)}"),
                                "device": device, "overlap": overlap, "sw_batch_size": sw_batch_size, "amp": amp, "compile": compile_mode}
                        log.info("benchmark: %s on %s (%s classes), run %d/%d", pipeline, case.name, count, repeat + 1, repeats)
                        runs[pipeline].append(_run(pipeline, spec, work))
                row.update({pipeline: _summarise(results) for pipeline, results in runs.items()})
                row["load_average_after"] = load_average()
                row["peers"] = peers
                row["non_network_s"] = {p: row[p]["seconds"] - row[p]["stages_s"]["predict"] for p in pipelines}
                row["ratios"] = {peer: _ratios(row["medseg"], row[peer]) for peer in peers}
                rows.append(row)
        result = {"benchmark": "medseg infer vs plain MONAI pipeline", "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
                  "settings": {"device": device, "overlap": overlap, "blending": "gaussian", "sw_batch_size": sw_batch_size, "tta": False,
                               "amp": amp, "repeats": repeats,
                               "model": str(model) if model else "random DynUNet (16 base features, max 256, 5 stages), patch 96^3, 3 mm isotropic plan"},
                  "cases": rows}
    if out_json is not None:
        write_report(result, Path(out_json))
    return result


def merge_results(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several bench_infer results (e.g. cubic and linear plans) as one report; rows keep their own settings."""
    merged = dict(results[0])
    merged["cases"] = [row for result in results for row in result["cases"]]
    return merged


def write_report(result: dict[str, Any], out_json: Path) -> tuple[Path, Path]:
    out_json.parent.mkdir(parents=True, exist_ok=True)
    write_text(out_json, json.dumps(result, indent=2) + "\n")
    markdown = write_text(out_json.with_suffix(".md"), render_markdown(result))
    return out_json, markdown


def _variant(row: dict[str, Any]) -> str:
    order = {None: "model's plan", 1: "linear", 3: "cubic"}.get(row.get("image_order"), f"order {row.get('image_order')}")
    return f"{row['classes'] or '-'} | {order} | {row.get('amp', 'off')} | {row.get('compile', 'auto')}"


def render_markdown(result: dict[str, Any]) -> str:
    """Tables of the results, and which stage dominates each pipeline's time outside the network."""
    machine, settings = result["machine"], result["settings"]
    lines = [f"# {result['benchmark']} ({result['date']})", "",
             f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB RAM, GPU: {machine['gpu'] or 'none'}; "
             f"Python {machine['python']}, torch {machine['torch']}, MONAI {machine['monai']}, SimpleITK {machine['simpleitk']}, numpy {machine['numpy']}.", "",
             f"Network: {settings['model']}. Every pipeline: device {settings['device']}, overlap {settings['overlap']}, {settings['blending']} "
             f"blending, sw_batch_size {settings['sw_batch_size']}, no TTA, the same torch threads; each run in its own process; "
             f"best of {settings['repeats']} alternating run(s) per pipeline (peak RSS: the largest).", "",
             "Pipelines: `medseg`; `monai` (MONAI's tutorial: Spacingd bilinear, softmax, Invertd of the class probabilities, argmax); "
             "`monai-expert` (float32 Spacingd, argmax on the model grid, then a nearest-neighbour Invertd of the label map).", "",
             "| input | classes | medseg interp. | AMP | compile | pipeline | seconds (best) | all runs | peak RSS MB | stages of the best run (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["cases"]:
        for pipeline in ["medseg", *row.get("peers", ["monai"])]:
            data = row[pipeline]
            stages = ", ".join(f"{k} {v:.1f}" for k, v in data["stages_s"].items())
            lines.append(f"| {row['input']} {'x'.join(map(str, row['shape']))} | {_variant(row)} | {pipeline} | {data['seconds']:.1f} | "
                         f"{', '.join(f'{v:.1f}' for v in data['seconds_all'])} | {data['peak_rss_mb']:.0f} | {stages} |")
    lines += ["", "| input | classes | medseg interp. | AMP | compile | peer | peer time / medseg time | medseg RAM / peer RAM | "
              "seconds outside the network: medseg / peer | largest medseg stage outside the network | mask agreement (mean Dice) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["cases"]:
        stages = {k: v for k, v in row["medseg"]["stages_s"].items() if k != "predict"}
        largest = max(stages, key=stages.get)
        for peer, ratio in row.get("ratios", {}).items():
            lines.append(f"| {row['input']} | {_variant(row)} | {peer} | {ratio['speedup']:.2f}x | {ratio['ram_ratio']:.2f} | "
                         f"{row['non_network_s']['medseg']:.1f} / {row['non_network_s'][peer]:.1f} | {largest} {stages[largest]:.1f} s | "
                         f"{ratio['agreement_dice']:.3f} |")
    return "\n".join(lines) + "\n"

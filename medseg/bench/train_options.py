"""Which training-step options pay on this machine: the same steps timed with each option alone.

``python -m medseg.bench.train_options DATASET --config CONFIG -o reports/train_step_options_cpu.json``
times :func:`medseg.bench.train.bench_train` for the baseline and for every variant (bf16 autocast,
channels_last_3d, torch.compile, fused optimizer), each in its own process so that a compiled graph
or a changed thread pool cannot leak into the next, and writes JSON plus a markdown table with the
speed-up of each. The defaults of ``train.amp``, ``train.channels_last``, ``train.compile`` and
``train.fused_optimizer`` follow what such a table shows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medseg.bench.common import load_average, machine_info
from medseg.io.atomic import write_json, write_text

VARIANTS: dict[str, list[str]] = {
    "baseline (fp32, eager, foreach)": ["train.amp=off", "train.compile=off", "train.fused_optimizer=off"],
    "bf16 autocast": ["train.amp=bf16"],
    "channels_last_3d": ["train.channels_last=true"],
    "torch.compile": ["train.compile=true"],
    "fused optimizer": ["train.fused_optimizer=on"],
}


def _one(dataset: str, config: str | None, overrides: list[str], iterations: int, out: Path) -> dict:
    command = [sys.executable, "-m", "medseg.cli.main", "bench", "train", dataset, "--iterations", str(iterations), "-o", str(out)]
    if config:
        command += ["--config", config]
    for item in overrides:
        command += ["--set", item]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        return {"error": (completed.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.read_text())


def run(dataset: str, config: str | None, iterations: int, out_json: Path, variants: list[str] | None = None, repeats: int = 1) -> dict:
    chosen = {name: VARIANTS[name] for name in (variants or VARIANTS)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="medseg_train_options_") as folder:
        for repeat in range(repeats):
            for name, overrides in chosen.items():
                started = time.perf_counter()
                result = _one(dataset, config, overrides, iterations, Path(folder) / f"{repeat}_{len(rows)}.json")
                rows.append({"variant": name, "repeat": repeat, "overrides": overrides, "load_average": load_average(),
                             "wall_s": round(time.perf_counter() - started, 1), **{k: result.get(k) for k in (
                                 "step_s_median", "step_s_mean", "loader_wait_share", "patch_size", "batch_size", "torch_threads", "error")}})
    best: dict[str, float] = {}
    for row in rows:
        if row.get("step_s_median"):
            best[row["variant"]] = min(best.get(row["variant"], float("inf")), row["step_s_median"])
    baseline = best.get(next(iter(chosen)))
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "dataset": dataset, "config": config, "iterations": iterations,
              "machine": machine_info(), "rows": rows,
              "best_step_s": best, "speedup": {name: round(baseline / value, 3) for name, value in best.items()} if baseline else {}}
    write_json(out_json, result)
    write_text(out_json.with_suffix(".md"), render(result))
    return result


def render(result: dict) -> str:
    machine = result["machine"]
    lines = [f"# Training-step options on {machine['cpu']} ({machine['cores']} cores), {result['date']}", "",
             f"`medseg bench train {result['dataset']}" + (f" --config {result['config']}" if result["config"] else "") +
             f" --iterations {result['iterations']}`, each variant in its own process, best median step of the repeats.", "",
             "| variant | s/step (median, best) | speed-up vs baseline |", "|---|---|---|"]
    for name, value in result["best_step_s"].items():
        lines.append(f"| {name} | {value:.3f} | {result['speedup'].get(name, float('nan')):.2f}x |")
    errors = [row for row in result["rows"] if row.get("error")]
    for row in errors:
        lines.append(f"\n{row['variant']}: failed ({row['error']})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--config")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--variant", action="append", choices=list(VARIANTS))
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = run(args.dataset, args.config, args.iterations, args.out, args.variant, args.repeats)
    print(render(result))


if __name__ == "__main__":
    main()

"""Seconds per sliding window on the CPU: eager PyTorch, torch.compile, ONNX Runtime and its reduced-precision paths.

One window through one randomly initialised DynUNet per setting (weights do not change the cost),
on ``--threads`` threads, median of ``--repeats`` timed calls after one warm-up call (compiling
happens in the warm-up and is reported apart). Each engine's mask agreement is the share of voxels
whose argmax equals eager float32's on the same window; with random weights many logits are near
ties, so this is a pessimistic bound, not the accuracy on a trained model.

    python -m medseg.bench.onnx --threads 2 --repeats 5 --json speeds.json

Settings: ``ct96`` (96^3 window, 16 base features, as `medseg bench infer`) and ``hippocampus``
(40 x 56 x 40, 32 base features, nnU-Net's width).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

SETTINGS = {
    "ct96": {"patch": (96, 96, 96), "spacing": (3.0, 3.0, 3.0), "base_features": 16, "max_features": 256},
    "hippocampus": {"patch": (40, 56, 40), "spacing": (1.0, 1.0, 1.0), "base_features": 32, "max_features": 320},
}


@dataclass
class EngineTiming:
    setting: str
    engine: str
    seconds_per_window: float | None
    first_call_s: float | None
    argmax_agreement: float | None
    note: str = ""


def _time(call: Callable[[torch.Tensor], torch.Tensor], window: torch.Tensor, repeats: int) -> tuple[float, float, torch.Tensor]:
    start = time.perf_counter()
    output = call(window)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(window)
        times.append(time.perf_counter() - start)
    return statistics.median(times), first, output


def _ort_variants(onnx_path: Path, threads: int, window: torch.Tensor, work: Path, wanted: tuple[str, ...]) -> dict[str, Callable]:
    """ORT fp32 (idle threads sleep / spin), fp16 weights, int8 dynamic and static (QDQ) quantisation; only those wanted."""
    import onnx

    from medseg.export.onnx_runtime import OnnxNetwork

    def fp16(path: Path) -> None:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True), str(path))

    def int8_dynamic(path: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(onnx_path), str(path), weight_type=QuantType.QInt8)

    def int8_static(path: Path) -> None:
        from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

        class Windows(CalibrationDataReader):  # seeded random windows: the network's inputs are normalised intensities
            def __init__(self):
                generator = torch.Generator().manual_seed(1)
                self.items = iter([{"image": torch.randn(window.shape, generator=generator).numpy()} for _ in range(4)])

            def get_next(self):
                return next(self.items, None)

        quantize_static(str(onnx_path), str(path), Windows(), weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)

    variants: dict[str, Callable] = {}
    if "onnxruntime" in wanted:
        variants["onnxruntime"] = OnnxNetwork(onnx_path, threads)
    if "onnxruntime spinning" in wanted:
        variants["onnxruntime spinning"] = OnnxNetwork(onnx_path, threads, spinning=True)
    for engine, build in (("onnxruntime fp16", fp16), ("onnxruntime int8 dynamic", int8_dynamic), ("onnxruntime int8 static", int8_static)):
        if engine in wanted:
            path = work / f"{engine.split(' ', 1)[1].replace(' ', '_')}.onnx"
            try:
                build(path)
                variants[engine] = OnnxNetwork(path, threads)
            except Exception as error:  # noqa: BLE001 - a variant that cannot be built is reported as failed
                log.warning("%s model not built: %s", engine, error)
    return variants


ENGINES = ("eager", "eager bf16 autocast", "torch.compile", "onnxruntime", "onnxruntime spinning", "onnxruntime fp16",
           "onnxruntime int8 dynamic", "onnxruntime int8 static")


def bench_setting(name: str, threads: int, repeats: int, engines_wanted: tuple[str, ...] = ENGINES) -> list[EngineTiming]:
    from medseg.export.onnx import export_onnx
    from medseg.bench.infer import build_benchmark_checkpoint
    from medseg.infer.compiled import CompiledNetwork
    from medseg.infer.model import load_model
    from medseg.runtime import threads_scope as torch_threads

    setting = SETTINGS[name]
    results: list[EngineTiming] = []
    with tempfile.TemporaryDirectory(prefix="medseg_onnx_bench_") as folder, torch_threads(threads):
        work = Path(folder)
        checkpoint = build_benchmark_checkpoint(work / "model.pt", classes=3, base_features=setting["base_features"],
                                                max_features=setting["max_features"], patch=setting["patch"], spacing=setting["spacing"])
        network = load_model(checkpoint).networks[0]
        window = torch.randn(1, 1, *setting["patch"], generator=torch.Generator().manual_seed(0))
        [exported] = export_onnx(checkpoint, work / "model.onnx", threads=threads)
        engines: dict[str, Callable] = {"eager": network}

        def bf16(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return network(x).float()

        engines["eager bf16 autocast"] = bf16
        if "torch.compile" in engines_wanted:
            engines["torch.compile"] = CompiledNetwork(network, batch_size=1)
        engines.update(_ort_variants(exported.path, threads, window, work, engines_wanted))
        reference = None
        for engine, call in engines.items():
            if engine not in engines_wanted and engine != "eager":  # eager fp32 is every other engine's reference
                continue
            try:
                with torch.inference_mode():
                    seconds, first, output = _time(call, window, repeats)
            except Exception as error:  # noqa: BLE001 - e.g. a kernel ORT lacks for a quantised op
                results.append(EngineTiming(name, engine, None, None, None, f"failed: {type(error).__name__}: {str(error)[:120]}"))
                continue
            reference = output.argmax(1) if reference is None else reference
            agreement = float((output.argmax(1) == reference).float().mean())
            note = "compile in first call" if engine == "torch.compile" else ""
            if engine == "torch.compile" and getattr(call, "failed", False):
                note = "compile failed: eager fallback"
            results.append(EngineTiming(name, engine, seconds, first, agreement, note))
            log.info("%s %s: %.3f s/window (first call %.1f s), argmax agreement %.4f", name, engine, seconds, first, agreement)
    return results


def markdown(results: list[EngineTiming]) -> str:
    lines = ["| setting | engine | s / window | vs eager | first call s | argmax = eager fp32 | note |", "|---|---|---|---|---|---|---|"]
    eager = {r.setting: r.seconds_per_window for r in results if r.engine == "eager"}
    for r in results:
        speed = f"{eager[r.setting] / r.seconds_per_window:.2f}x" if r.seconds_per_window and eager.get(r.setting) else "-"
        seconds = "-" if r.seconds_per_window is None else f"{r.seconds_per_window:.3f}"
        first = "-" if r.first_call_s is None else f"{r.first_call_s:.1f}"
        agreement = "-" if r.argmax_agreement is None else f"{r.argmax_agreement:.4f}"
        lines.append(f"| {r.setting} | {r.engine} | {seconds} | {speed} | {first} | {agreement} | {r.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES),
                        help="engines to time (torch.compile's first call compiles for 20-70 s; eager always runs)")
    parser.add_argument("--json", type=Path, help="also write the timings as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    results = [timing for name in args.settings for timing in bench_setting(name, args.threads, args.repeats, tuple(args.engines))]
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


if __name__ == "__main__":
    main()

"""`medseg export onnx`: every fold network of a model as an ONNX graph, verified against PyTorch.

Exported in eval mode (deep supervision heads are not graph outputs) with dynamic batch and spatial
axes: any window size the network's strides divide runs. Plan, labels, normalisation, patch size
and model id go into the file's metadata (:mod:`medseg.export.onnx_metadata`).

Exporter (``exporter=``): ``torchscript`` traces the network (torch's older exporter, deprecated
since torch 2.9 but still shipped); ``dynamo`` goes through ``torch.export`` and onnxscript (the
new default of torch). For medseg's networks both give the same graph (same Conv/InstanceNorm/
LeakyRelu/ConvTranspose/Concat nodes) and the same ORT speed, but the TorchScript exporter takes
about 1 s where the dynamo one takes about 15 s (tiny DynUNet, 2 busy cores). ``auto`` uses
TorchScript and falls back to dynamo when it fails (or once torch removes it).

Before a file is put in place, ONNX Runtime runs it on seeded random windows (the patch size at
batch 1, and a second spatial shape at batch 2 to exercise the dynamic axes) and its logits are
compared with PyTorch's. A graph whose largest difference exceeds ``tolerance`` times the logits'
magnitude is refused (``allow_mismatch`` writes it anyway, with a warning).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from medseg.errors import InputError, MedsegError
from medseg.export.onnx_metadata import INPUT_NAME, METADATA_KEY, OUTPUT_NAME, OnnxMetadata, require
from medseg.infer.model import LoadedModel, load_model
from medseg.io.atomic import atomic_path

log = logging.getLogger(__name__)

#: Largest |ONNX - PyTorch| logit difference accepted, relative to max(1, max |logit|).
DEFAULT_TOLERANCE = 1e-3
#: Opset of the TorchScript exporter (17: InstanceNormalization, ConvTranspose with dynamic shapes; ORT >= 1.14).
TORCHSCRIPT_OPSET = 17
Exporter = Literal["auto", "torchscript", "dynamo"]


@dataclass
class ExportedNetwork:
    path: Path
    fold: int | None
    max_abs_diff: float
    argmax_agreement: float
    seconds: float


class _EvalLogits(nn.Module):
    """The network as inference calls it: one logits tensor (the full-resolution head of list outputs)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        output = self.network(image)
        return output[0] if isinstance(output, (list, tuple)) else output


def output_paths(model: LoadedModel, out: Path) -> list[Path]:
    """``out`` itself for one network and an ``.onnx`` name; else ``out/fold_<k>.onnx`` per network."""
    if out.suffix.lower() == ".onnx":
        if len(model.networks) > 1:
            raise InputError(out, f"the model has {len(model.networks)} fold networks: give an output folder (one fold_<k>.onnx each)")
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    names = [f"fold_{fold}.onnx" if fold is not None else f"network_{index}.onnx" for index, fold in enumerate(model.folds)]
    if len(set(names)) != len(names):
        names = [f"network_{index}.onnx" for index in range(len(names))]
    return [out / name for name in names]


def _divisor(network: nn.Module, patch: tuple[int, ...]) -> tuple[int, ...]:
    """Per-axis multiple every input size must have (product of the encoder strides); 1 if unknown."""
    strides = getattr(network, "strides", None)
    if not strides:
        return (1,) * len(patch)
    per_stage = [(s,) * len(patch) if isinstance(s, int) else tuple(s) for s in strides]
    return tuple(math.prod(stage[axis] for stage in per_stage) for axis in range(len(patch)))


def check_shapes(model: LoadedModel, network: nn.Module) -> list[tuple[int, ...]]:
    """Input shapes compared at export: the patch at batch 1, and another valid spatial shape at batch 2."""
    patch = tuple(model.patch_size)
    divisor = _divisor(network, patch)
    other = tuple(p - d if p - d >= d else p + d for p, d in zip(patch, divisor))
    return [(1, model.in_channels, *patch), (2, model.in_channels, *other)]


@contextlib.contextmanager
def _quiet_exporters():
    """The exporters print progress, and log missing torchvision ops and rewrite passes: keep medseg's output clean."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # deprecation and tracer chatter; failures still raise
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _torch_export(wrapped: nn.Module, example: torch.Tensor, path: Path, opset: int | None, exporter: Exporter) -> str:
    """Export with ``exporter`` (``auto``: TorchScript, else dynamo); returns the exporter used."""
    spatial = range(2, example.dim())
    if exporter in ("auto", "torchscript"):
        axes = {0: "batch", **{axis: "xyz"[axis - 2] for axis in spatial}}
        try:
            with _quiet_exporters():
                torch.onnx.export(wrapped, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamo=False,
                                  opset_version=opset or TORCHSCRIPT_OPSET, dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes})
            return "torchscript"
        except Exception as error:  # noqa: BLE001 - auto falls back to the other exporter
            if exporter == "torchscript":
                raise
            log.info("TorchScript ONNX export failed (%s: %s); using the dynamo exporter", type(error).__name__, str(error)[:200])
    require("onnxscript")  # the torch.export-based exporter translates through it
    # torch.export specialises a batch of 1 to a constant: trace with a batch of 2.
    example = torch.cat([example, example])
    dynamic = {"image": {0: torch.export.Dim("batch", min=1, max=1024), **{axis: torch.export.Dim.DYNAMIC for axis in spatial}}}
    with _quiet_exporters():
        torch.onnx.export(wrapped, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamo=True, dynamic_shapes=dynamic, opset_version=opset, external_data=False, verbose=False)
    return "dynamo"


def _attach_metadata(path: Path, metadata: OnnxMetadata) -> None:
    onnx = require("onnx")
    graph = onnx.load(str(path))
    metadata.opset = int(next((entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx")), 0)) or None
    del graph.metadata_props[:]
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.to_json()
    graph.doc_string = f"medseg {metadata.name} fold {metadata.checkpoint.get('fold')} (model {metadata.model_id.get('id')})"
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))


def compare_with_torch(network: nn.Module, path: Path, shapes: list[tuple[int, ...]], threads: int, seed: int = 0) -> tuple[float, float, float]:
    """(max |ONNX - torch| logit, that relative to max(1, max |logit|), argmax agreement) on seeded random windows."""
    from medseg.export.onnx_runtime import session_options

    ort = require("onnxruntime")
    session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    worst = relative = 0.0
    agree, total = 0, 0
    for shape in shapes:
        window = torch.randn(shape, generator=generator)
        with torch.inference_mode():
            expected = _EvalLogits(network)(window).float().numpy()
        actual = session.run([OUTPUT_NAME], {INPUT_NAME: window.numpy()})[0]
        if actual.shape != expected.shape:
            raise MedsegError(f"{path}: ONNX Runtime returned logits of shape {actual.shape} for input {shape}, PyTorch {expected.shape}")
        difference = float(np.abs(actual - expected).max())
        worst = max(worst, difference)
        relative = max(relative, difference / max(1.0, float(np.abs(expected).max())))
        agree += int((actual.argmax(1) == expected.argmax(1)).sum())
        total += int(np.prod(expected.shape[:1] + expected.shape[2:]))
    return worst, relative, agree / total


def export_network(model: LoadedModel, index: int, path: Path, *, opset: int | None = None, tolerance: float = DEFAULT_TOLERANCE,
                   allow_mismatch: bool = False, threads: int = 1, exporter: Exporter = "auto") -> ExportedNetwork:
    """Export fold network ``index`` of ``model`` to ``path`` (atomically), verified as the module doc says."""
    require("onnx")
    start = time.perf_counter()
    network = model.networks[index].eval()
    shapes = check_shapes(model, network)
    info = model.checkpoints[index]
    metadata = OnnxMetadata(
        name=model.name, plan=model.plan.model_dump(mode="json"), labels=model.labels, in_channels=model.in_channels,
        patch_size=list(model.patch_size), model_id=model.model_id(), config=model.config,
        configuration=model.configuration.model_dump(mode="json"),
        checkpoint={"file": info.path.name, "sha256": info.sha256, "fold": info.fold, "epoch": info.epoch,
                    "validation": None if info.validation is None else info.validation.model_dump(mode="json")})
    with atomic_path(path) as temporary:
        try:
            used = _torch_export(_EvalLogits(network), torch.zeros(shapes[0]), temporary, opset, exporter)
        except Exception as error:  # torch.export/onnxscript raise many types for unsupported layers
            raise MedsegError(f"{info.path}: the network could not be exported to ONNX ({type(error).__name__}: "
                              f"{str(error).strip().splitlines()[0][:200] if str(error).strip() else ''})") from error
        worst, relative, agreement = compare_with_torch(network, temporary, shapes, threads)
        metadata.verification = {"max_abs_logit_diff": worst, "relative_diff": relative, "argmax_agreement": agreement,
                                 "input_shapes": [list(s) for s in shapes], "tolerance": tolerance, "exporter": used}
        if relative > tolerance:
            message = (f"ONNX Runtime's logits differ from PyTorch's by up to {worst:.3g} ({relative:.2g} of their magnitude, "
                       f"tolerance {tolerance:g}; argmax agrees on {agreement:.4%} of voxels)")
            if not allow_mismatch:
                raise MedsegError(f"{info.path}: {message}; nothing written (allow_mismatch / --force writes it anyway)")
            log.warning("%s: %s; written anyway", path, message)
        _attach_metadata(temporary, metadata)
    seconds = time.perf_counter() - start
    log.info("exported %s in %.1f s: max |ONNX - torch| logit %.2g, argmax agreement %.5f", path, seconds, worst, agreement)
    return ExportedNetwork(path, info.fold, worst, agreement, seconds)


def export_onnx(model: str | Path, out: str | Path, *, opset: int | None = None, tolerance: float = DEFAULT_TOLERANCE,
                allow_mismatch: bool = False, threads: int | None = None, exporter: Exporter = "auto") -> list[ExportedNetwork]:
    """Export every fold network of a checkpoint, run folder or folder of folds; see the module docstring."""
    from medseg.runtime import threads_scope as torch_threads

    loaded = load_model(model)
    paths = output_paths(loaded, Path(out))
    count = threads or torch.get_num_threads()
    with torch_threads(count):
        return [export_network(loaded, index, path, opset=opset, tolerance=tolerance, allow_mismatch=allow_mismatch, threads=count,
                               exporter=exporter)
                for index, path in enumerate(paths)]

"""`medseg export onnx`: every fold network of a model as an ONNX graph, verified against PyTorch.

Exported in eval mode (deep supervision heads are not graph outputs) with dynamic batch and spatial
axes: any window size the network's strides divide runs. Plan, labels, normalisation, patch size
and model id go into the file's metadata (:mod:`medseg.export.onnx_metadata`). A network with a
lesion-centre head (``lesion_instances``) gets the head's logit as a second output, ``objectness``,
so ONNX inference writes the same instance files and confidences as PyTorch.

A folder export writes one ``fold_<k>.onnx`` per network and `medseg infer` averages every
``.onnx`` file of a folder, so other ``.onnx`` files already there (say ``fold_3.onnx`` of an
earlier 5-fold export, now 3 folds) are refused before any work, or deleted with ``replace``. The
files appear together: each is written to a temporary and all are renamed once every fold passed.

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

from medseg.errors import InputError, MedsegError, brief
from medseg.export.onnx_metadata import INPUT_NAME, METADATA_KEY, OBJECTNESS_NAME, OUTPUT_NAME, OnnxMetadata, require
from medseg.infer.model import CheckpointChoice, LoadedModel, load_model
from medseg.io.atomic import atomic_path
from medseg.models.lesion_instances import has_objectness

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
    """The network as inference calls it: one logits tensor (the full-resolution head of list outputs), and
    the objectness logit as a second output for networks with a lesion-centre head."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.objectness = has_objectness(network)
        self.eval()  # a new module trains by default, and the exporter restores that mode onto the network afterwards

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.objectness:
            output = self.network(image, objectness=True)
            return output.semantic, output.objectness
        output = self.network(image)
        return output[0] if isinstance(output, (list, tuple)) else output


def output_names(network: nn.Module) -> list[str]:
    """The graph's outputs: the logits, and the objectness logit of a lesion-centre head."""
    return [OUTPUT_NAME, OBJECTNESS_NAME] if has_objectness(network) else [OUTPUT_NAME]


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


def stale_files(out: Path, paths: list[Path]) -> list[Path]:
    """``.onnx`` files of the output folder that this export does not write: `medseg infer` would average them in."""
    if out.suffix.lower() == ".onnx" or not out.is_dir():
        return []
    written = {path.name for path in paths}
    return sorted(p for p in out.glob("*.onnx") if p.name not in written and not p.name.startswith("."))


def _divisor(network: nn.Module, patch: tuple[int, ...]) -> tuple[int, ...]:
    """Per-axis multiple every input size must have: the network's own ``shape_factor()`` (MONAI SegResNetDS,
    which pools by its own spacing rule), else the product of its ``strides``; 1 if unknown."""
    shape_factor = getattr(network, "shape_factor", None)
    if callable(shape_factor):
        return tuple(int(factor) for factor in shape_factor())
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


def _torch_export(wrapped: _EvalLogits, example: torch.Tensor, path: Path, opset: int | None, exporter: Exporter) -> str:
    """Export with ``exporter`` (``auto``: TorchScript, else dynamo); returns the exporter used."""
    spatial = range(2, example.dim())
    outputs = output_names(wrapped.network)
    if exporter in ("auto", "torchscript"):
        axes = {0: "batch", **{axis: "xyz"[axis - 2] for axis in spatial}}
        try:
            with _quiet_exporters():
                torch.onnx.export(wrapped, (example,), str(path), input_names=[INPUT_NAME], output_names=outputs, dynamo=False,
                                  opset_version=opset or TORCHSCRIPT_OPSET, dynamic_axes={name: axes for name in [INPUT_NAME, *outputs]})
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
        torch.onnx.export(wrapped, (example,), str(path), input_names=[INPUT_NAME], output_names=outputs,
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
    """(max |ONNX - torch| over every output, that relative to max(1, max |output|), argmax agreement of the logits)
    on seeded random windows."""
    from medseg.export.onnx_runtime import session_options

    ort = require("onnxruntime")
    session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    names = output_names(network)
    generator = torch.Generator().manual_seed(seed)
    worst = relative = 0.0
    agree, total = 0, 0
    for shape in shapes:
        window = torch.randn(shape, generator=generator)
        with torch.inference_mode():
            output = _EvalLogits(network)(window)
        expected_all = [part.float().numpy() for part in (output if isinstance(output, tuple) else (output,))]
        actual_all = session.run(names, {INPUT_NAME: window.numpy()})
        for name, expected, actual in zip(names, expected_all, actual_all):
            if actual.shape != expected.shape:
                raise ValueError(f"ONNX Runtime returned {name} of shape {actual.shape} for input {shape}, PyTorch {expected.shape}")
            difference = float(np.abs(actual - expected).max())
            worst = max(worst, difference)
            relative = max(relative, difference / max(1.0, float(np.abs(expected).max())))
        expected, actual = expected_all[0], actual_all[0]
        agree += int((actual.argmax(1) == expected.argmax(1)).sum())
        total += int(np.prod(expected.shape[:1] + expected.shape[2:]))
    return worst, relative, agree / total


def _metadata(model: LoadedModel, index: int) -> OnnxMetadata:
    """What fold network ``index`` carries besides its graph (verification is added once it is checked)."""
    info = model.checkpoints[index]
    return OnnxMetadata(
        name=model.name, plan=model.plan.model_dump(mode="json"), labels=model.labels, in_channels=model.in_channels,
        patch_size=list(model.patch_size), model_id=model.model_id(), config=model.config,
        configuration=model.configuration.model_dump(mode="json"),
        checkpoint={"file": info.path.name, "sha256": info.sha256, "fold": info.fold, "epoch": info.epoch,
                    "validation": None if info.validation is None else info.validation.model_dump(mode="json")},
        objectness_output=OBJECTNESS_NAME if has_objectness(model.networks[index]) else None)


@contextlib.contextmanager
def _one_line(source: Path, what: str):
    """Whatever torch, onnxscript, onnx or ONNX Runtime raise (many types, multi-line texts) as one MedsegError line."""
    try:
        yield
    except (MedsegError, MemoryError):
        raise
    except Exception as error:  # noqa: BLE001 - see the docstring
        raise MedsegError(f"{source}: {what} ({type(error).__name__}: {brief(error)})") from error


def _export_into(model: LoadedModel, index: int, temporary: Path, path: Path, *, opset: int | None, tolerance: float,
                 allow_mismatch: bool, threads: int, exporter: Exporter) -> ExportedNetwork:
    """Export and verify fold network ``index`` into ``temporary`` (renamed to ``path`` by the caller)."""
    start = time.perf_counter()
    network = model.networks[index].eval()
    source = model.checkpoints[index].path
    shapes = check_shapes(model, network)
    metadata = _metadata(model, index)
    with _one_line(source, "the network could not be exported to ONNX"):
        used = _torch_export(_EvalLogits(network), torch.zeros(shapes[0]), temporary, opset, exporter)
    with _one_line(source, f"the exported network could not be checked against PyTorch on windows {shapes}"):
        worst, relative, agreement = compare_with_torch(network, temporary, shapes, threads)
    metadata.verification = {"max_abs_logit_diff": worst, "relative_diff": relative, "argmax_agreement": agreement,
                             "input_shapes": [list(s) for s in shapes], "tolerance": tolerance, "exporter": used}
    if relative > tolerance:
        message = (f"ONNX Runtime's logits differ from PyTorch's by up to {worst:.3g} ({relative:.2g} of their magnitude, "
                   f"tolerance {tolerance:g}; argmax agrees on {agreement:.4%} of voxels)")
        if not allow_mismatch:
            raise MedsegError(f"{source}: {message}; nothing written (allow_mismatch / --force writes it anyway)")
        log.warning("%s: %s; written anyway", path, message)
    with _one_line(source, "the exported graph could not be given its metadata"):
        _attach_metadata(temporary, metadata)
    seconds = time.perf_counter() - start
    log.info("exported %s in %.1f s: max |ONNX - torch| logit %.2g, argmax agreement %.5f", path, seconds, worst, agreement)
    return ExportedNetwork(path, model.checkpoints[index].fold, worst, agreement, seconds)


def export_network(model: LoadedModel, index: int, path: Path, *, opset: int | None = None, tolerance: float = DEFAULT_TOLERANCE,
                   allow_mismatch: bool = False, threads: int = 1, exporter: Exporter = "auto") -> ExportedNetwork:
    """Export fold network ``index`` of ``model`` to ``path`` (atomically), verified as the module doc says."""
    require("onnx")
    with atomic_path(path) as temporary:
        return _export_into(model, index, temporary, path, opset=opset, tolerance=tolerance, allow_mismatch=allow_mismatch,
                            threads=threads, exporter=exporter)


def _listed(paths: list[Path], limit: int = 3) -> str:
    names = ", ".join(path.name for path in paths[:limit])
    return names + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def export_onnx(model: str | Path, out: str | Path, *, opset: int | None = None, tolerance: float = DEFAULT_TOLERANCE,
                allow_mismatch: bool = False, threads: int | None = None, exporter: Exporter = "auto",
                replace: bool = False, checkpoint: CheckpointChoice = "final") -> list[ExportedNetwork]:
    """Export every fold network of a checkpoint, run folder or folder of folds; see the module docstring.

    ``replace``: delete the output folder's other ``.onnx`` files (once the new ones are in place) instead of refusing.
    ``checkpoint``: which weights of a run folder, final or best, as `medseg infer --checkpoint` chooses them.
    """
    from medseg.runtime import threads_scope as torch_threads

    require("onnx")
    loaded = load_model(model, checkpoint)
    out = Path(out)
    paths = output_paths(loaded, out)
    stale = stale_files(out, paths)
    if stale and not replace:
        raise InputError(out, f"already holds {_listed(stale)}, not written by this export; `medseg infer` averages every .onnx file "
                              "of a folder, so they would join this model's folds: export into an empty folder, or pass --replace to delete them")
    count = threads or torch.get_num_threads()
    with torch_threads(count), contextlib.ExitStack() as renames:  # every file appears only once all folds passed
        exported = [_export_into(loaded, index, renames.enter_context(atomic_path(path)), path, opset=opset, tolerance=tolerance,
                                 allow_mismatch=allow_mismatch, threads=count, exporter=exporter)
                    for index, path in enumerate(paths)]
    for path in stale:
        path.unlink()
        log.info("%s: deleted (not part of this export; --replace)", path)
    return exported

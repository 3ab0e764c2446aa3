"""Run exported networks with ONNX Runtime inside medseg's own pipeline.

:func:`load_onnx_model` returns a regular :class:`~medseg.infer.model.LoadedModel` whose
``networks`` are :class:`OnnxNetwork` modules: torch tensors in, torch logits out, on the CPU. So
the sliding window, fold averaging, TTA, restore and postprocessing of `medseg infer` stay one
code path for both backends. The model id is the PyTorch model's (the metadata keeps each fold's
checkpoint digest), so sidecars of both backends name the same weights.

A folder is one model's folds or nothing: every file must carry the same model id (one export) and
a different checkpoint, else the file that does not belong is named and the folder refused, since a
stale ``fold_3.onnx`` of another export would otherwise be averaged in. A network exported with
its lesion-centre head (``objectness`` output) answers ``forward(x, objectness=True)`` like the
PyTorch one, so `medseg infer` writes the same instance files and confidences; a ``lesion_instances``
file exported without it (older medseg) is refused rather than silently losing the head.

Session settings (:func:`session_options`): intra-op threads = medseg's inference threads, one
inter-op thread (the graph is one chain of convolutions), every graph optimisation, idle workers
sleeping. Measured on 2 shared cores: spinning workers were no faster (hippocampus window 1.12 vs
1.04 s, 96^3 5.07 vs 4.96 s); IOBinding into a preallocated output was no faster than
``session.run`` (1.49 vs 1.51 s median; the output copy is ~1 MB), so it is not used.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medseg.errors import ConfigError, InputError
from medseg.export.onnx_metadata import METADATA_KEY, OBJECTNESS_NAME, OnnxMetadata, require
from medseg.infer.model import CheckpointInfo, LoadedModel
from medseg.models.lesion_instances import InstanceOutput
from medseg.schema.checkpoint import ValidationScores
from medseg.schema.plan import Configuration, Plan
from medseg.schema.records import validate_record

log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
#: Registered models whose networks have a lesion-centre head: their files must carry the objectness output.
HEAD_MODELS = ("lesion_instances",)


def session_options(threads: int, spinning: bool = False):
    """ORT options for CPU inference with ``threads`` threads.

    ``spinning=False``: idle ORT workers sleep instead of busy-waiting. With spinning, ORT's pool
    keeps every core busy between calls, which starves what medseg runs beside the network (the
    prefetch thread's reading/preprocessing, torch's softmax and stitching).
    """
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3  # errors only: ORT's warnings go to stderr, outside medseg's logging
    return options


class OnnxNetwork(nn.Module):
    """An exported network in an ORT session, usable where medseg calls a PyTorch network.

    ``forward`` takes ``(B, C, *spatial)`` float32 windows and returns CPU logits ``(B, K, *spatial)``;
    with ``objectness=True`` (files with the head's output, ``accepts_objectness``) an
    :class:`~medseg.models.lesion_instances.InstanceOutput` as the PyTorch network does. It has no
    parameters; ``to`` accepts only the CPU (the CPU package of onnxruntime has no GPU provider, and
    medseg's CUDA path is PyTorch's).
    """

    def __init__(self, path: str | Path, threads: int = 1, providers: tuple[str, ...] = (CPU_PROVIDER,), spinning: bool = False):
        super().__init__()
        ort = require("onnxruntime")
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(threads, spinning), providers=list(providers))
        except Exception as error:  # ORT raises its own Fail/InvalidGraph types for broken files
            raise InputError(self.path, f"ONNX Runtime cannot load this file ({str(error).strip().splitlines()[0][:200]})") from error
        self.input_name = self.session.get_inputs()[0].name
        outputs = [output.name for output in self.session.get_outputs()]
        self.output_name = outputs[0]
        self.objectness_name = OBJECTNESS_NAME if OBJECTNESS_NAME in outputs[1:] else None
        self.threads = threads

    @property
    def accepts_objectness(self) -> bool:
        """True when the file has the lesion-centre head's output (read by :func:`medseg.models.lesion_instances.has_objectness`)."""
        return self.objectness_name is not None

    @property
    def metadata(self) -> OnnxMetadata:
        text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if text is None:
            raise InputError(self.path, "ONNX file has no medseg metadata (export it with `medseg export onnx`)")
        return OnnxMetadata.from_json(text, self.path)

    def forward(self, batch: torch.Tensor, objectness: bool = False) -> torch.Tensor | InstanceOutput:
        feed = {self.input_name: np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())}
        if not objectness:
            return torch.from_numpy(self.session.run([self.output_name], feed)[0])
        if self.objectness_name is None:
            raise ConfigError(f"{self.path}: this ONNX file has no lesion-centre head output")
        semantic, centres = self.session.run([self.output_name, self.objectness_name], feed)
        return InstanceOutput(torch.from_numpy(semantic), torch.from_numpy(centres))

    def to(self, device=None, *args, **kwargs) -> OnnxNetwork:
        if isinstance(device, (str, torch.device)) and torch.device(device).type != "cpu":
            raise ConfigError(f"the ONNX Runtime backend runs on the CPU; got device {device} (use --device cpu, or the PyTorch backend on CUDA)")
        return self


def onnx_files(path: str | Path) -> list[Path]:
    """One ``.onnx`` file, or every ``.onnx`` file of a folder (as `medseg export onnx` writes folds)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(path, "does not exist (expected an .onnx file or a folder of them from `medseg export onnx`)")
    files = sorted(p for p in path.glob("*.onnx") if not p.name.startswith("."))
    if not files:
        raise InputError(path, "no .onnx files in this folder")
    return files


def _typed(metadata: OnnxMetadata, path: Path) -> tuple[Plan, Configuration]:
    """The plan and configuration the file carries, validated like a checkpoint's."""
    if not metadata.configuration:
        raise InputError(path, "the ONNX file names no plan configuration; export it again with this medseg (`medseg export onnx`)")
    return validate_record(Plan, metadata.plan, path), validate_record(Configuration, metadata.configuration, path)


def _consistent(first: OnnxMetadata, other: OnnxMetadata, path: Path) -> None:
    """Folds of one ensemble must share preprocessing, labels, channels and patch (as load_model checks)."""
    (plan_a, conf_a), (plan_b, conf_b) = _typed(first, path), _typed(other, path)
    checks = {
        "preprocessing": (plan_a.preprocessing_identity(conf_a), plan_b.preprocessing_identity(conf_b)),
        "labels": (first.labels, other.labels),
        "in channels": (first.in_channels, other.in_channels),
        "patch size": (list(first.patch_size), list(other.patch_size)),
    }
    for name, (a, b) in checks.items():
        if a != b:
            raise InputError(path, f"its {name} differs from the first file's; ONNX folds of one ensemble must come from one plan")


def _one_export(files: list[Path], metadata: list[OnnxMetadata]) -> None:
    """The files of a folder are averaged as one model's folds: refuse the file whose model id differs from the
    others' (the id most files carry; ties: the first file's)."""
    ids = [str((item.model_id or {}).get("id")) for item in metadata]
    counts = Counter(ids)
    reference = max(counts, key=lambda ident: (counts[ident], -ids.index(ident)))
    example = files[ids.index(reference)].name
    for file, ident in zip(files, ids):
        if ident != reference:
            raise InputError(file, f"comes from another model or export (model id {ident}) than {example} (model id {reference}); the .onnx "
                                   "files of a folder are averaged as one model's folds: remove it, or export again into an empty folder")


def _distinct_folds(files: list[Path], metadata: list[OnnxMetadata]) -> None:
    """Each fold once (a copied file would weigh twice); a folder missing some of the export's folds is only logged."""
    seen: dict[str, Path] = {}
    for file, item in zip(files, metadata):
        digest = str(item.checkpoint.get("sha256", ""))
        if digest and digest in seen:
            raise InputError(file, f"holds the same network as {seen[digest].name} (checkpoint {digest[:12]}); each fold must appear once")
        seen[digest] = file
    expected = len((metadata[0].model_id or {}).get("checkpoints") or [])
    if expected > len(files):
        log.warning("%s: %d of the %d fold networks of model %s; the ensemble averages those", files[0].parent, len(files), expected,
                    (metadata[0].model_id or {}).get("id"))


def _has_head(network: OnnxNetwork, metadata: OnnxMetadata) -> None:
    """A lesion-centre model's file must carry the head: inference would otherwise drop its instances silently."""
    if metadata.name in HEAD_MODELS and not network.accepts_objectness:
        raise InputError(network.path, f"this {metadata.name} model was exported without its lesion-centre head (medseg "
                                       f"{metadata.medseg_version}); export it again with `medseg export onnx`")


def load_onnx_model(path: str | Path, threads: int = 1, providers: tuple[str, ...] = (CPU_PROVIDER,), spinning: bool = False) -> LoadedModel:
    """A :class:`LoadedModel` whose networks run in ONNX Runtime (see module doc); ``path``: file or folder."""
    files = onnx_files(path)
    networks = [OnnxNetwork(file, threads, providers, spinning) for file in files]
    metadata = [network.metadata for network in networks]
    first = metadata[0]
    _one_export(files, metadata)
    for file, item in zip(files[1:], metadata[1:]):
        _consistent(first, item, file)
    _distinct_folds(files, metadata)
    infos = []
    for file, network, item in zip(files, networks, metadata):
        _has_head(network, item)
        checkpoint = item.checkpoint
        validation = checkpoint.get("validation")
        infos.append(CheckpointInfo(file, str(checkpoint.get("sha256", "")), checkpoint.get("fold"), checkpoint.get("epoch"),
                                    ValidationScores.model_validate(validation) if validation else None))
    log.info("loaded %d ONNX network(s) from %s (%s, %d thread(s))", len(networks), path, first.name, threads)
    plan, configuration = _typed(first, Path(path))
    return LoadedModel(networks, plan, configuration, first.labels, first.in_channels, first.name, infos, first.config)

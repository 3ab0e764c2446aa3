"""Fine-tuning: start a run from another run's weights (``train.init_from``, ``medseg train --init-from``).

The network is built for the NEW run's plan (its patch, spacing, channels and classes); then every weight of
the checkpoint whose name and shape match is copied in. What does not match stays as freshly initialised:

* output heads (every tensor whose shape follows the number of outputs, found by building the network a second
  time, on the meta device, with one more output) are new whenever the label set differs, even when the count
  is the same: a "liver" channel says nothing about "anterior hippocampus";
* tensors whose shape differs (another in-channel count, another kernel or width) are skipped;
* tensors the checkpoint lacks are missing (re-initialised); checkpoint tensors the network lacks are unexpected.

``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes are stripped first. A checkpoint of another
architecture (``model.name``), or one that covers less than :data:`MIN_MATCHED_FRACTION` of the new network's
parameters, is a one-line ConfigError that says what differs and which ``--set`` makes them agree.

The checkpoint is found the way ``medseg infer`` finds one (:func:`medseg.infer.model.resolve_checkpoints`:
a file; a fold folder's final weights, ``checkpoint_last.pt``, else its best; pass ``checkpoint_best.pt`` itself to
start from the best ones); of a run folder with several folds, ``fold_all`` (trained on every case) is used, else the
lowest-numbered fold. ``--resume`` wins over ``init_from``: the resume
checkpoint already holds the fine-tuned weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from pydantic import ValidationError
from torch import nn

from medseg.errors import ConfigError
from medseg.models.config import ModelConfig
from medseg.models.registry import build_model, model_topology
from medseg.schema.checkpoint import CheckpointPayload, ModelSpec
from medseg.schema.plan import Plan, Topology
from medseg.train.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

#: Below this share of the new network's parameters (by count) matching the checkpoint, nothing meaningful transfers.
MIN_MATCHED_FRACTION = 0.5
#: The report's file in the run folder (also embedded in summary.json).
REPORT_FILE = "init_from.json"
_WRAPPERS = ("module", "_orig_mod")  # DDP, torch.compile
_LISTED = 20  # shape mismatches logged one per line; all of them are in the JSON report


@dataclass(frozen=True)
class ShapeMismatch:
    name: str
    checkpoint_shape: list[int]
    network_shape: list[int]


@dataclass(frozen=True)
class OutputHeads:
    """Output layers left freshly initialised because the label set changed."""

    outputs: int
    kind: str  # "classes" or "regions"
    names: list[str]
    reason: str
    tensors: list[ShapeMismatch]

    def describe(self) -> str:
        return f"new output heads for {self.outputs} {self.kind} ({', '.join(self.names)}): {self.reason}"


@dataclass
class TransferReport:
    architecture: str
    loaded: list[str]
    skipped: list[ShapeMismatch]
    missing: list[str]
    unexpected: list[str]
    output_heads: OutputHeads | None
    loaded_parameters: int
    total_parameters: int
    source: str = ""  # what the user gave
    checkpoint: str = ""  # the file the weights came from
    chosen: str = ""  # why that file

    @property
    def tensors(self) -> int:
        """Tensors of the new network (aliases of one tensor counted once)."""
        return len(self.loaded) + len(self.skipped) + len(self.missing) + (len(self.output_heads.tensors) if self.output_heads else 0)

    @property
    def loaded_fraction(self) -> float:
        return self.loaded_parameters / max(self.total_parameters, 1)

    def headline(self) -> str:
        heads = f"; {self.output_heads.describe()}" if self.output_heads else ""
        return (f"init from {self.checkpoint} ({self.chosen}): loaded {len(self.loaded)} of {self.tensors} tensors "
                f"({_percent(self.loaded_fraction)} of the network's {self.total_parameters:,} parameters){heads}; "
                f"{len(self.skipped)} skipped (shape differs), {len(self.missing)} missing in the checkpoint (freshly initialised), "
                f"{len(self.unexpected)} unexpected (not in this network, unused)")

    def log(self) -> None:
        log.info("%s", self.headline())
        for mismatch in self.skipped[:_LISTED]:
            log.info("  skipped %s: checkpoint %s, network %s", mismatch.name, mismatch.checkpoint_shape, mismatch.network_shape)
        if len(self.skipped) > _LISTED:
            log.info("  ... and %d more shape mismatches (all in %s)", len(self.skipped) - _LISTED, REPORT_FILE)
        for name in self.missing[:_LISTED]:
            log.info("  missing in the checkpoint (freshly initialised): %s", name)
        for name in self.unexpected[:_LISTED]:
            log.info("  unexpected (in the checkpoint, not in this network): %s", name)
        log.debug("loaded: %s", ", ".join(self.loaded))

    def to_record(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record.update(loaded_tensors=len(self.loaded), network_tensors=self.tensors, loaded_fraction=round(self.loaded_fraction, 4),
                      summary=self.headline())
        return record


@dataclass(frozen=True)
class NetworkShape:
    """What decides a network's parameter names and shapes; compared to say why a checkpoint does not fit."""

    spec: ModelSpec
    model: ModelConfig
    topology: Topology | None

    @classmethod
    def of(cls, spec: ModelSpec, model: ModelConfig) -> NetworkShape:
        try:
            topology = model_topology(model, spec.configuration)
        except ConfigError:
            topology = None
        return cls(spec, model, topology)


def resolve_init_checkpoint(source: str | Path) -> tuple[Path, str]:
    """The checkpoint file ``source`` names, found as ``medseg infer`` does, and why that one."""
    from medseg.infer.model import LAST, resolve_checkpoints

    path = Path(source)
    found = resolve_checkpoints(path)  # a one-line InputError when there is none
    if path.is_file():
        return path, "the checkpoint file given"
    every_case = [candidate for candidate in found if candidate.parent.name == "fold_all"]
    numbered = sorted((candidate for candidate in found if candidate.parent.name.removeprefix("fold_").isdigit()),
                      key=lambda candidate: int(candidate.parent.name.removeprefix("fold_")))
    pick = (every_case or numbered or found)[0]
    kind = "final checkpoint" if pick.name == LAST else "best validation checkpoint (no final one)"
    why = kind if len(found) == 1 else f"{kind} of {pick.parent.name}, " + (
        "trained on every case" if every_case else "the lowest fold") + f"; {len(found) - 1} other fold(s) not used"
    return pick, why


def strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) from the names, where every name has them."""
    names = {key: key.split(".") for key in state}

    def wrapped() -> bool:
        return bool(names) and any(all(len(parts) > 1 and parts[0] == prefix for parts in names.values()) for prefix in _WRAPPERS)

    while wrapped():  # DDP(compile(net)), compile(DDP(net)): both orders
        names = {key: parts[1:] for key, parts in names.items()}
    # a compiled submodule leaves _orig_mod inside the name
    return {".".join(part for part in parts if part != _WRAPPERS[1]): state[key] for key, parts in names.items()}


@contextlib.contextmanager
def _quiet_models() -> Iterator[None]:
    logger = logging.getLogger("medseg.models")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def output_head_names(model: ModelConfig, spec: ModelSpec) -> set[str]:
    """State-dict names whose shape follows the number of outputs: the network built on the meta device
    (no memory, no RNG) with ``out_channels`` and with one more, compared."""
    with torch.random.fork_rng(devices=[]), _quiet_models(), torch.device("meta"):
        one = build_model(model, spec.in_channels, spec.out_channels, spec.configuration).state_dict()
        more = build_model(model, spec.in_channels, spec.out_channels + 1, spec.configuration).state_dict()
    return {name for name, tensor in one.items() if name not in more or more[name].shape != tensor.shape}


def _canonical(state: dict[str, torch.Tensor], key: Any) -> dict[str, str]:
    """Each name -> the first name of the same tensor (DynUNet registers its blocks twice)."""
    first: dict[Any, str] = {}
    return {name: first.setdefault(key(tensor), name) for name, tensor in state.items()}


def _storage_key(tensor: torch.Tensor) -> tuple:
    return tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride())


def output_names(plan: Plan) -> list[str]:
    return list(plan.regions) if plan.has_regions else [plan.labels[value] for value in sorted(plan.labels)]


def _heads_reason(source: CheckpointPayload, plan: Plan) -> str | None:
    """Why the checkpoint's output heads do not fit this run (None: same outputs, heads load)."""
    before = output_names(source.plan)
    if source.model_spec.out_channels != plan.num_outputs:
        return f"the checkpoint's are for {source.model_spec.out_channels} ({', '.join(before)})"
    if (source.plan.regions, source.plan.labels) != (plan.regions, plan.labels):
        return f"the checkpoint's are for other labels ({', '.join(before)}), so they stay freshly initialised"
    return None


def transfer_weights(network: nn.Module, payload: CheckpointPayload, heads: set[str], plan: Plan) -> TransferReport:
    """Copy every matching tensor of ``payload`` into ``network`` (built for ``plan``); the output ``heads`` stay
    freshly initialised when their shape differs or the label set changed."""
    heads_reason = _heads_reason(payload, plan)
    source = strip_wrapper_prefixes(payload.model)
    target = network.state_dict(keep_vars=True)
    aliases = _canonical(target, id)
    parameters = {id(parameter) for parameter in network.parameters()}
    source_names = set(_canonical(source, _storage_key).values())
    loaded, skipped, missing, reset = [], [], [], []
    for name in dict.fromkeys(aliases.values()):
        shape = list(target[name].shape)
        if name not in source:
            missing.append(name)
            continue
        mismatch = ShapeMismatch(name, list(source[name].shape), shape)
        if name in heads and (mismatch.checkpoint_shape != shape or heads_reason):
            reset.append(mismatch)
        elif mismatch.checkpoint_shape != shape:
            skipped.append(mismatch)
        else:
            loaded.append(name)
    # by first names only: an alias (skip_layers.*) can name another block in a network of another depth
    network.load_state_dict({name: source[name] for name in loaded}, strict=False)
    count = {name: target[name].numel() for name in dict.fromkeys(aliases.values()) if id(target[name]) in parameters}
    heads_report = None if not reset else OutputHeads(plan.num_outputs, "regions" if plan.has_regions else "classes", output_names(plan),
                                                      heads_reason or "the checkpoint's have another shape", reset)
    return TransferReport(payload.model_spec.name, loaded, skipped, missing, sorted(name for name in source_names if name not in target),
                          heads_report, sum(count.get(name, 0) for name in loaded), sum(count.values()))


def model_config_of(payload: CheckpointPayload) -> ModelConfig:
    """The ``model:`` section the checkpoint's network was built with (its name alone when the section does not validate)."""
    try:
        return ModelConfig(**(payload.config.get("model") or {}))
    except (ValidationError, TypeError):
        return ModelConfig(name=payload.model_spec.name)


def describe_differences(old: NetworkShape, new: NetworkShape) -> tuple[list[str], list[str]]:
    """(what differs between the checkpoint's network and this run's, the ``--set`` options that would align them)."""
    differences, fixes = [], []
    if old.spec.in_channels != new.spec.in_channels:
        differences.append(f"in-channels {old.spec.in_channels} vs {new.spec.in_channels} (the data's modalities; the first convolution stays new)")
    a, b = old.topology, new.topology
    if a is not None and b is not None:
        if a.spatial_dims != b.spatial_dims:
            differences.append(f"{a.spatial_dims}D vs {b.spatial_dims}D")
            fixes.append(f"--set train.configuration={old.spec.configuration.name}")
        elif (a.n_stages, a.kernel_sizes, a.strides) != (b.n_stages, b.kernel_sizes, b.strides):
            differences.append(_stage_difference(a, b))
            fixes += _stage_fixes(old, new)
        shared = min(a.n_stages, b.n_stages)
        if a.features[:shared] != b.features[:shared]:  # another depth alone is said above
            differences.append(f"widths {a.features} vs {b.features}")
            fixes.append(f"--set model.base_features={a.features[0]} --set model.max_features={max(a.features)}")
    for field in ("norm", "res_block", "unet_res_units", "deep_supervision", "max_pooling_steps", "min_feature_map_size"):
        before, after = getattr(old.model, field), getattr(new.model, field)
        if before != after:
            differences.append(f"model.{field} {before} vs {after}")
            fixes.append(f"--set model.{field}={_flat(before)}")
    return differences, fixes


def _stage_difference(a: Topology, b: Topology) -> str:
    depth = f"depth {a.n_stages} vs {b.n_stages} stages" if a.n_stages != b.n_stages else "same depth, other kernels or strides"
    where = "" if (a.patch_size, a.spacing) == (b.patch_size, b.spacing) else \
        f"; patch {a.patch_size} at {a.spacing} mm vs {b.patch_size} at {b.spacing} mm"
    return f"{depth} (strides {a.strides[1:]} vs {b.strides[1:]}, kernels {a.kernel_sizes} vs {b.kernel_sizes}{where})"


def _stage_fixes(old: NetworkShape, new: NetworkShape) -> list[str]:
    """Stages follow the patch and the spacing (nnU-Net's rule), capped by model.max_pooling_steps."""
    before, after = old.spec.configuration, new.spec.configuration
    fixes = []
    if before.patch_size != after.patch_size:
        fixes.append(f"--set train.patch_size={_flat(before.patch_size)}")
    if before.target_spacing and before.target_spacing != after.target_spacing:
        fixes.append(f"--set plan.target_spacing={_flat(before.target_spacing)}")
    if old.topology is not None and new.topology is not None and old.topology.n_stages < new.topology.n_stages \
            and old.model.max_pooling_steps == new.model.max_pooling_steps:
        fixes.append(f"--set model.max_pooling_steps={old.topology.n_stages - 1}")
    return fixes


def _percent(fraction: float) -> str:
    """0.9987 -> 99.9%, 1.0 -> 100%: a share just under all is not rounded up to all."""
    return "100%" if fraction >= 1 else f"{min(fraction, 0.999):.1%}"


def _flat(value: Any) -> str:
    """A value as ``--set`` reads it back (YAML): [1,2], true, null."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, bool)) or value is None else str(value)


def check_architecture(path: Path, payload: CheckpointPayload, model: ModelConfig) -> None:
    source = payload.model_spec.name
    if source != model.name:
        widths = model_config_of(payload)
        width = "" if widths.base_features is None else f" --set model.base_features={widths.base_features}"
        width += "" if widths.max_features is None else f" --set model.max_features={widths.max_features}"
        raise ConfigError(f"{path}: --init-from: the checkpoint holds a {source} network but this run builds {model.name}; weights do not "
                          f"transfer between architectures: train with --set model.name={source}{width}, or init from a {model.name} checkpoint")


def check_enough(path: Path, report: TransferReport, old: NetworkShape, new: NetworkShape) -> None:
    """Refuse a transfer that covers too little of the network, or any across depths: networks name their decoder
    levels from the bottleneck up (dynunet's ``upsamples.0`` is the deepest), so at another depth a tensor whose shape
    happens to match lands at another level."""
    other_depth = old.topology is not None and new.topology is not None and old.topology.n_stages != new.topology.n_stages
    if report.loaded_fraction >= MIN_MATCHED_FRACTION and not other_depth:
        return
    differences, fixes = describe_differences(old, new)
    if other_depth:
        how = ("make them agree: " + " ".join(dict.fromkeys(fixes)) + ", or ") if fixes else ""
        raise ConfigError(f"{path}: --init-from: the checkpoint's network has {old.topology.n_stages} stages and this run's "
                          f"{new.topology.n_stages}, so its layers would land at other depths: {'; '.join(differences)}; "
                          f"{how}train without --init-from")
    what = "; ".join(differences) or "the parameter names and shapes differ"
    how = ("make them agree: " + " ".join(dict.fromkeys(fixes)) + ", or ") if fixes else ""
    raise ConfigError(f"{path}: --init-from: only {_percent(report.loaded_fraction)} of the new {new.spec.name} network's parameters "
                      f"({len(report.loaded)} of {report.tensors} tensors) match the checkpoint by name and shape, under the "
                      f"{MIN_MATCHED_FRACTION:.0%} needed: checkpoint vs this run: {what}; {how}train without --init-from")


def initialise_from(network: nn.Module, source: str | Path, checkpoint: Path, chosen: str, model: ModelConfig, spec: ModelSpec,
                    plan: Plan) -> TransferReport:
    """Load ``checkpoint`` (found from ``source``) into ``network``, built for ``spec`` on this run's ``plan``."""
    payload = load_checkpoint(checkpoint)  # torch.load(weights_only=True) onto the CPU
    check_architecture(checkpoint, payload, model)
    report = transfer_weights(network, payload, output_head_names(model, spec), plan)
    check_enough(checkpoint, report, NetworkShape.of(payload.model_spec, model_config_of(payload)), NetworkShape.of(spec, model))
    return dataclasses.replace(report, source=str(source), checkpoint=str(checkpoint), chosen=chosen)


def write_report(run_dir: Path, report: TransferReport | None) -> None:
    """``init_from.json`` in the run folder; a fresh run without init_from removes a stale one."""
    from medseg.io.atomic import write_json

    path = Path(run_dir) / REPORT_FILE
    if report is not None:
        write_json(path, report.to_record())
    elif path.is_file():
        path.unlink()


def fresh_tensor_names(record: dict[str, Any] | None) -> set[str]:
    """Names of the tensors a transfer report (``TransferReport.to_record()`` or ``init_from.json``) left freshly
    initialised: shape mismatches, tensors the checkpoint lacks, and new output heads."""
    if not record:
        return set()
    heads = record.get("output_heads") or {}
    return ({item["name"] for item in record.get("skipped", [])} | set(record.get("missing", []))
            | {item["name"] for item in heads.get("tensors", [])})


def read_report(run_dir: Path) -> dict[str, Any] | None:
    """The run's transfer report (a resumed fine-tuning run keeps the one written when it started)."""
    path = Path(run_dir) / REPORT_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None

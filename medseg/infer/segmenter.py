"""One case through a trained model: read -> preprocess exactly as in training -> sliding window ->
probabilities back to the raw grid -> argmax -> postprocess.

Preprocessing is :func:`medseg.data.preprocess.preprocess_volume` with the plan and configuration
stored in the checkpoint (normalisation statistics included), never statistics recomputed from the
input, so a case is seen exactly as the cached training cases were.

Python use (notebooks)::

    from medseg.infer import Segmenter
    segmenter = Segmenter("runs/liver/3d_lowres/fold_0")     # settings: the run's own infer: section
    prediction = segmenter.predict(read_volume("ct.nii.gz"))  # .labels on the input grid
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from medseg import __version__
from medseg.data.preprocess import preprocess_volume, restore_labels, split_channels
from medseg.errors import InputError
from medseg.infer.compiled import CompiledNetwork, should_compile
from medseg.infer.config import InferConfig
from medseg.infer.inputs import CaseSource, read_case
from medseg.infer.missing import blank_missing, channel_names, missing_indices, resolve_missing_channels
from medseg.infer.instances import (
    LesionInstances,
    instance_setup,
    lesion_classes,
    lesion_instances,
    lesions_document,
    model_grid_scores,
    restore_scores,
)
from medseg.infer.model import LoadedModel, load_for_backend
from medseg.infer.postprocess import label_statistics, lesion_label_indices, postprocess, postprocess_regions, resolve_region_rules, resolve_rules
from medseg.infer.predictor import (
    WindowSpec,
    count_windows,
    default_sw_batch_size,
    mirror_sets,
    predict_outputs,
    predict_probabilities,
    stitch_device,
)
from medseg.infer.uncertainty import ModelGridUncertainty, UncertaintyMaps, model_grid_maps, restore_uncertainty, uncertainty_summary
from medseg.io.volume import Volume
from medseg.models.lesion_instances import ObjectnessChannel, has_objectness
from medseg.runtime import available_cores, resolve_runtime, runtime_scope
from medseg.schema.case import CaseProperties

log = logging.getLogger(__name__)


@dataclass
class PreparedCase:
    """A case read and preprocessed; ``reference`` keeps the input grid (not its voxels) for writing."""

    name: str
    reference: Volume
    image: np.ndarray | torch.Tensor  # (C, X, Y, Z) float32 on the preprocessed grid (a tensor on the GPU when inference runs there)
    properties: CaseProperties
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class CasePrediction:
    name: str
    labels: np.ndarray  # on the input grid, postprocessed
    reference: Volume
    statistics: dict[str, dict[str, Any]]
    removed: dict[str, int]  # voxels removed by postprocessing, by label or region name
    probabilities: np.ndarray | None
    timings: dict[str, float]
    preprocessed_shape: list[int]
    uncertainty: UncertaintyMaps | None = None  # infer.save_uncertainty: entropy (and mutual information) on the input grid
    uncertainty_summary: dict[str, Any] | None = None
    instances: LesionInstances | None = None  # infer.instances: instance map on the input grid and one record per lesion


def grid_only(volume: Volume) -> Volume:
    """The volume's grid and metadata with a zero-cost placeholder array, so the voxels can be freed."""
    return Volume(np.broadcast_to(np.zeros((), dtype=np.uint8), volume.shape), volume.affine, volume.role, dict(volume.meta))


def saved_infer_config(model: LoadedModel) -> InferConfig:
    """The ``infer:`` section the model was trained with (its run's config), or the defaults."""
    section = (model.config or {}).get("infer") or {}
    try:
        return InferConfig.model_validate(section)
    except ValidationError:
        log.warning("the model's saved infer settings are not valid for this medseg; using the defaults")
        return InferConfig()


class Segmenter:
    """A loaded model plus resolved settings; predicts any number of cases with one load."""

    def __init__(self, model: str | Path | LoadedModel, config: InferConfig | None = None):
        if isinstance(model, LoadedModel):
            loaded = model
        else:
            backend = config.backend if config is not None else "auto"
            loaded = load_for_backend(model, backend, (config.threads if config is not None else None) or available_cores(),
                                      checkpoint=config.checkpoint if config is not None else "final")
        self.config = config or saved_infer_config(loaded)
        self.backend = "onnxruntime" if any(type(network).__name__ == "OnnxNetwork" for network in loaded.networks) else "torch"
        if self.backend == "onnxruntime":  # ONNX Runtime runs on the CPU and is already an optimised engine
            self.config = self.config.model_copy(update={"device": "cpu", "compile": "off", "amp": "off"})
        self.runtime = resolve_runtime(self.config.device, self.config.amp, self.config.threads)
        self.model = loaded.to(self.runtime.device)
        tta = bool(self.config.tta)
        mirrors = mirror_sets(self.config.tta_axes, self.model.spatial_dims, tta)
        sw_batch = self.config.sw_batch_size or default_sw_batch_size(self.runtime.device, self.model.patch_size)
        self.spec = WindowSpec(self.model.patch_size, self.config.overlap, sw_batch, mirrors, self.model.configuration.slice_axis,
                               activation="sigmoid" if self.model.has_regions else "softmax")
        self.region_names = list(self.model.plan.regions) if self.model.has_regions else []
        self.rules = resolve_rules(self.config, self.model.labels, self.region_names)
        self.region_rules = resolve_region_rules(self.config, self.region_names)
        self.lesion_labels = lesion_label_indices(self.config, self.model.labels)
        has_head = all(map(has_objectness, self.model.networks))
        wants_instances = self.config.instances or (self.config.instances is None and has_head)
        classes = lesion_classes(self.config, self.lesion_labels, self.model.labels, dict(self.model.plan.regions) if self.model.has_regions else None,
                                 self.model.plan.regions_class_order) if wants_instances else {}  # its log lines only when instances are made
        self.instances = instance_setup(self.config, classes, has_head, self.model.config)
        self.missing_channels = resolve_missing_channels(self.config.missing_channels, self.model.plan)  # explicit only
        self.uncertainty = bool(self.config.save_uncertainty) and not self.model.has_regions
        if self.config.save_uncertainty and self.model.has_regions:
            log.warning("save_uncertainty: a region (sigmoid) model has no softmax over exclusive classes; no uncertainty maps are written")
        self.expected_cases = 1  # infer() sets the batch size; it decides whether compiling pays
        self._compute_model: LoadedModel | None = None

    @property
    def tta(self) -> bool:
        return len(self.spec.mirrors) > 1

    @property
    def centres(self) -> bool:
        """True when the windows also stitch the lesion-centre head's probability (instance confidences)."""
        return self.instances is not None and self.instances.source == "objectness"

    @property
    def members(self) -> int:
        """Predictions averaged per voxel: fold networks x mirror passes."""
        return len(self.model.networks) * len(self.spec.mirrors)

    def windows(self, preprocessed_shape: Sequence[int]) -> int:
        return count_windows(tuple(preprocessed_shape), self.model.patch_size, self.config.overlap, self.model.configuration.slice_axis)

    def compute_model(self, preprocessed_shape: Sequence[int]) -> LoadedModel:
        """The model windows run through: compiled (``infer.compile``) or as loaded. Decided once."""
        if self._compute_model is None:
            passes = len(self.spec.mirrors) * len(self.model.networks) * self.expected_cases
            equivalents = self.windows(preprocessed_shape) * passes * math.prod(self.model.patch_size) / 96**3
            base = self.model
            if self.centres:  # the head's logit as an extra last channel, so compiling and the windows see one tensor
                base = replace(self.model, networks=[ObjectnessChannel(network) for network in self.model.networks])
            self._compute_model = base
            # Every fold network is compiled on its own: the threshold grows with their number.
            threshold = self.config.compile_min_windows * len(self.model.networks)
            if should_compile(self.config.compile, self.runtime.device, equivalents, threshold):
                log.info("compiling: about %.0f window(s) of 96^3 ahead (infer.compile=%s)", equivalents, self.config.compile)
                networks = [CompiledNetwork(network, self.spec.sw_batch_size) for network in base.networks]
                self._compute_model = replace(base, networks=networks)
        return self._compute_model

    @property
    def compiled(self) -> bool:
        """True when windows run through a compiled network (decided, and compiling did not fail)."""
        networks = self._compute_model.networks if self._compute_model is not None else []
        return any(isinstance(network, CompiledNetwork) and not network.failed for network in networks)

    def warm_up(self) -> None:
        """Start CUDA and let cuDNN choose its kernels on one window while the first case is read."""
        if not self.runtime.cuda:
            return
        start = time.perf_counter()
        window = torch.zeros((self.spec.sw_batch_size, self.model.in_channels, *self.model.patch_size), device=self.runtime.device)
        with runtime_scope(self.runtime), torch.inference_mode(), self.runtime.autocast():
            for network in self.model.networks:
                network(window)
        torch.cuda.synchronize(self.runtime.device)
        log.debug("CUDA warm-up took %.2f s", time.perf_counter() - start)

    # --- one case -----------------------------------------------------------------------------
    def read(self, case: CaseSource, series: str | None = None) -> list[Volume]:
        return read_case(case, self.model.in_channels, self.model.spatial_dims, series, self.missing_channels)

    def prepare(self, volumes: Volume | Sequence[Volume], name: str = "case") -> PreparedCase:
        """Preprocess like training (plan, configuration grid and normalisation from the checkpoint)."""
        channels = split_channels(volumes)
        source = channels[0].meta.get("source", name)
        if len(channels) != self.model.in_channels:
            raise InputError(source, f"has {len(channels)} channel(s); the model takes {self.model.in_channels}")
        if self.model.spatial_dims == 3 and min(channels[0].shape) == 1:
            raise InputError(source, f"is a 2D image (shape {channels[0].shape}); this model is 3D")
        start = time.perf_counter()
        reference = grid_only(channels[0])
        device = self.runtime.device if self.runtime.cuda else None  # normalise and resample where the windows run
        case = preprocess_volume(channels, self.model.plan, self.model.configuration, case_id=name, device=device)
        missing = missing_indices(channels)
        if missing:  # placeholders of channels named missing: exactly 0 (the mean after z-scoring) whatever normalisation made of them
            blank_missing(case.image, missing)
            names = [channel_names(self.model.plan)[index] for index in missing]
            reference.meta["missing_channels"] = names
            reference.meta["warnings"] = [*reference.meta.get("warnings", []), f"channel(s) {', '.join(names)} missing: filled as missing (0)"]
        return PreparedCase(name, reference, case.image, case.properties, {"preprocess": time.perf_counter() - start})

    def predict_prepared(self, prepared: PreparedCase, on_windows: Callable[[int], None] | None = None) -> CasePrediction:
        """Sliding window, back to the input grid, argmax, postprocessing and per-label statistics.

        Consumes ``prepared.image`` (freed once the windows are done, to keep peak memory down).
        """
        with runtime_scope(self.runtime):
            return self._predict_prepared(prepared, on_windows)

    def _predict_prepared(self, prepared: PreparedCase, on_windows: Callable[[int], None] | None) -> CasePrediction:
        timings = dict(prepared.timings)
        start = time.perf_counter()
        model = self.compute_model(prepared.image.shape[1:])
        shape = list(prepared.image.shape[1:])
        extra = int(self.centres) + int(self.uncertainty and self.members > 1)  # 1-channel outputs, each with its own weight map
        target = stitch_device(self.config.stitch_device, self.runtime, model.num_classes + 2 * extra, tuple(shape), self.config.stitch_gpu_fraction)
        probabilities, model_grid, centres = self._stitch(model, prepared.image, target, on_windows)
        prepared.image = np.empty((0,), dtype=np.float32)  # the preprocessed image is no longer needed
        if self.runtime.cuda:
            torch.cuda.synchronize(self.runtime.device)
        timings["predict"] = time.perf_counter() - start
        start = time.perf_counter()
        geometry = prepared.properties.geometry
        order = self.model.plan.regions_class_order if self.model.has_regions else None
        scores = model_grid_scores(self.instances, probabilities, centres) if self.instances is not None else None
        del centres
        labels, raw_probabilities = restore_labels(probabilities, geometry, compute_device=self.runtime.device,
                                                   chunk_mb=self.config.restore_chunk_mb, keep_probabilities=self.config.save_probabilities,
                                                   regions_class_order=order)
        del probabilities
        uncertainty = None
        if model_grid is not None:
            uncertainty = restore_uncertainty(model_grid, geometry, self.runtime.device, self.config.restore_chunk_mb)
            del model_grid
        if scores is not None:
            scores = restore_scores(scores, geometry, self.runtime.device, self.config.restore_chunk_mb)
        timings["restore"] = time.perf_counter() - start
        start = time.perf_counter()
        spacing = prepared.reference.spacing
        removed = {self.model.labels[k]: n for k, n in postprocess(labels, self.rules, spacing, self.config.connectivity).items()}
        if self.region_rules:
            plan = self.model.plan
            by_region = postprocess_regions(labels, list(plan.regions.values()), plan.regions_class_order, self.region_rules, spacing, self.config.connectivity)
            removed |= {self.region_names[position]: n for position, n in by_region.items()}
        statistics = label_statistics(labels, self.model.labels, spacing, self.lesion_labels, self.config.connectivity)
        timings["postprocess"] = time.perf_counter() - start
        summary = None
        if uncertainty is not None:  # of the final (postprocessed) structures
            start = time.perf_counter()
            summary = uncertainty_summary(uncertainty, labels, self.model.labels)
            timings["uncertainty_summary"] = time.perf_counter() - start
        instances = None
        if self.instances is not None and scores is not None:  # of the final (postprocessed) lesions
            start = time.perf_counter()
            instances = lesion_instances(labels, prepared.reference, self.instances, scores, self.config.connectivity)
            timings["instances"] = time.perf_counter() - start
        return CasePrediction(prepared.name, labels, prepared.reference, statistics, removed, raw_probabilities, timings, shape, uncertainty, summary,
                              instances=instances)

    def _stitch(self, model: LoadedModel, image: np.ndarray | torch.Tensor, target: torch.device,
                on_windows: Callable[[int], None] | None) -> tuple[torch.Tensor, ModelGridUncertainty | None, torch.Tensor | None]:
        """Stitched mean probabilities on the model grid, plus the normalised uncertainty maps and the lesion-centre
        probability when they are asked for (one pass over the windows)."""
        if not self.uncertainty and not self.centres:
            return predict_probabilities(model.networks, image, self.spec, self.runtime, target, model.num_classes, on_windows), None, None
        outputs = predict_outputs(model.networks, image, self.spec, self.runtime, target, model.num_classes, on_windows,
                                  objectness=self.centres, member_entropy=self.uncertainty and self.members > 1)
        maps = model_grid_maps(outputs.probabilities, outputs.expected_entropy, self.members) if self.uncertainty else None
        return outputs.probabilities, maps, outputs.objectness

    def predict(self, volumes: Volume | Sequence[Volume], name: str = "case") -> CasePrediction:
        """Everything but the files: for notebooks and tests."""
        return self.predict_prepared(self.prepare(volumes, name))

    def instance_outputs(self, prediction: CasePrediction) -> tuple[np.ndarray, dict[str, Any]] | None:
        """The instance map and ``<case>_lesions.json`` of a prediction (None without instances)."""
        if prediction.instances is None or self.instances is None:
            return None
        document = lesions_document(prediction.instances, prediction.name, self.instances, self.config.connectivity, self.model.model_id(),
                                    __version__)
        return prediction.instances.instance_map, document

    def sidecar(self, prediction: CasePrediction) -> dict[str, Any]:
        reference = prediction.reference
        return {
            "case": prediction.name,
            "medseg_version": __version__,
            "model": self.model.model_id(),
            "settings": {**self.runtime.describe(), "backend": self.backend, "sw_batch_size": self.spec.sw_batch_size, "tta": self.tta, "compiled": self.compiled,
                         "overlap": self.config.overlap, "blending": "gaussian", "tta_passes": len(self.spec.mirrors),
                         "folds": len(self.model.networks),
                         "postprocess": {self.model.labels[k]: rule.model_dump() for k, rule in self.rules.items()}
                         | {self.region_names[k]: rule.model_dump() for k, rule in self.region_rules.items()}},
            "input": {"format": reference.meta.get("format"), "shape": list(reference.shape),
                      "spacing_mm": [round(float(s), 6) for s in reference.spacing], "orientation": reference.orientation,
                      "channels": self.model.in_channels, "preprocessed_shape": prediction.preprocessed_shape,
                      "missing_channels": list(reference.meta.get("missing_channels", []))},
            "warnings": list(reference.meta.get("warnings", [])),
            "labels": prediction.statistics,
            "postprocess_removed_voxels": dict(prediction.removed),
            "runtime_s": {key: round(value, 3) for key, value in prediction.timings.items()},
        } | ({"uncertainty": prediction.uncertainty_summary} if prediction.uncertainty_summary is not None else {}) | (
            {"instances": {"lesions": len(prediction.instances.lesions), "confidence": prediction.instances.source}}
            if prediction.instances is not None else {})

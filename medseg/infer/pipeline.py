"""`medseg infer` end to end: read -> preprocess exactly as in training -> sliding window ->
probabilities back to the raw grid -> argmax -> postprocess -> write.

Preprocessing is :func:`medseg.data.preprocess.preprocess_volume` with the plan stored in the
checkpoint (normalization statistics included), never statistics recomputed from the input, so
a case is seen exactly as the cached training cases were. The model is loaded once per batch of
cases, and a background thread reads and preprocesses the next case while the current one is
predicted (numpy, SimpleITK, gzip and torch release the GIL for their heavy work).

Python use (notebooks)::

    from medseg.infer import Segmenter
    segmenter = Segmenter("runs/liver/fold_0")
    prediction = segmenter.predict(read_volume("ct.nii.gz"))   # .labels on the input grid
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg import __version__
from medseg.data.parallel import describe_error
from medseg.data.preprocess import preprocess_volume
from medseg.errors import InputError, MedsegError
from medseg.infer.compiled import CompiledNetwork, should_compile
from medseg.infer.config import InferConfig
from medseg.infer.inputs import CaseSource, discover_cases, read_case
from medseg.infer.model import LoadedModel, load_model
from medseg.infer.outputs import MASK_SUFFIXES, output_paths, write_case
from medseg.infer.postprocess import label_statistics, lesion_label_indices, postprocess, resolve_rules
from medseg.infer.predictor import count_windows, default_sw_batch_size, make_runtime, mirror_sets, predict_probabilities, torch_threads
from medseg.infer.progress import InferProgress
from medseg.infer.restore import restore_labels
from medseg.io.volume import Volume

log = logging.getLogger(__name__)


@dataclass
class PreparedCase:
    """A case read and preprocessed; ``reference`` keeps the input grid (not its voxels) for writing."""

    name: str
    reference: Volume
    image: np.ndarray  # (C, X, Y, Z) float32 on the preprocessed grid
    properties: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class CasePrediction:
    name: str
    labels: np.ndarray  # on the input grid, postprocessed
    reference: Volume
    statistics: dict[str, dict[str, Any]]
    removed: dict[int, int]
    probabilities: np.ndarray | None
    timings: dict[str, float]
    preprocessed_shape: list[int]


@dataclass
class InferReport:
    outputs: dict[str, list[Path]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


class InferFailures(MedsegError):
    """Some cases of a batch failed; the others were written. Carries the report."""

    def __init__(self, report: InferReport):
        self.report = report
        shown = "; ".join(f"{name}: {message}" for name, message in list(report.failed.items())[:5])
        more = f"; and {len(report.failed) - 5} more" if len(report.failed) > 5 else ""
        total = len(report.failed) + len(report.outputs)
        super().__init__(f"{len(report.failed)} of {total} case(s) failed ({shown}{more})")


def grid_only(volume: Volume) -> Volume:
    """The volume's grid and metadata with a zero-cost placeholder array, so the voxels can be freed."""
    return Volume(np.broadcast_to(np.zeros((), dtype=np.uint8), volume.shape), volume.affine, volume.role, dict(volume.meta))


def _memory_error(name: str, error: BaseException, runtime_device: torch.device, sw_batch_size: int) -> MedsegError:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return MedsegError(f"{name}: out of GPU memory ({describe_error(error)[:120]}); try a smaller --sw-batch-size "
                           f"(now {sw_batch_size}), --stitch-device cpu, or --device cpu")
    return MedsegError(f"{name}: out of RAM on {runtime_device} ({describe_error(error)[:120]}); try --device cuda, "
                       "--stitch-device cpu, without --save-probabilities, or a smaller --set infer.restore_chunk_mb")


def _is_memory_error(error: BaseException) -> bool:
    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and ("can't allocate memory" in str(error) or "out of memory" in str(error).lower())


class Segmenter:
    """A loaded model plus resolved settings; predicts any number of cases with one load."""

    def __init__(self, model: str | Path | LoadedModel, config: InferConfig | None = None):
        self.config = config or InferConfig()
        self.runtime = make_runtime(self.config)
        self.model = (model if isinstance(model, LoadedModel) else load_model(model)).to(self.runtime.device)
        if self.config.sw_batch_size is None:
            self.runtime.sw_batch_size = default_sw_batch_size(self.runtime.device, self.model.patch_size)
        self.rules = resolve_rules(self.config, self.model.labels)
        self.lesion_labels = lesion_label_indices(self.config, self.model.labels)
        self.mirrors = mirror_sets(self.config.tta_axes, self.model.spatial_dims, self.runtime.tta)
        self.expected_cases = 1  # infer() sets the batch size; it decides whether compiling pays
        self._compute_model: LoadedModel | None = None

    def compute_model(self, preprocessed_shape: Sequence[int]) -> LoadedModel:
        """The model windows run through: compiled (``infer.compile``) or as loaded. Decided once."""
        if self._compute_model is None:
            windows = count_windows(tuple(preprocessed_shape), self.model.patch_size, self.config.overlap)
            passes = len(self.mirrors) * len(self.model.networks) * self.expected_cases
            equivalents = windows * passes * math.prod(self.model.patch_size) / 96**3
            self._compute_model = self.model
            # Every fold network is compiled on its own: the threshold grows with their number.
            threshold = self.config.compile_min_windows * len(self.model.networks)
            if should_compile(self.config.compile, self.runtime.device, equivalents, threshold):
                log.info("compiling: about %.0f window(s) of 96^3 ahead (infer.compile=%s)", equivalents, self.config.compile)
                networks = [CompiledNetwork(network, self.runtime.sw_batch_size) for network in self.model.networks]
                self._compute_model = replace(self.model, networks=networks)
        return self._compute_model

    @property
    def compiled(self) -> bool:
        """True when windows run through a compiled network (decided, and compiling did not fail)."""
        networks = self._compute_model.networks if self._compute_model is not None else []
        return any(isinstance(network, CompiledNetwork) and not network.failed for network in networks)

    # --- one case -----------------------------------------------------------------------------
    def read(self, case: CaseSource, series: str | None = None) -> list[Volume]:
        return read_case(case, self.model.in_channels, self.model.spatial_dims, series)

    def prepare(self, volumes: Volume | Sequence[Volume], name: str = "case") -> PreparedCase:
        """Preprocess like training (plan and normalization from the checkpoint)."""
        channels = [volumes] if isinstance(volumes, Volume) else list(volumes)
        if len(channels) == 1 and channels[0].array.ndim == 4:
            whole = channels[0]
            channels = [Volume(whole.array[..., c], whole.affine, "image", dict(whole.meta)) for c in range(whole.channels)]
        if len(channels) != self.model.in_channels:
            raise InputError(channels[0].meta.get("source", name), f"has {len(channels)} channel(s); the model takes {self.model.in_channels}")
        if self.model.spatial_dims == 3 and min(channels[0].shape) == 1:
            raise InputError(channels[0].meta.get("source", name), f"is a 2D image (shape {channels[0].shape}); this model is 3D")
        start = time.perf_counter()
        reference = grid_only(channels[0])
        case = preprocess_volume(channels, self.model.plan, case_id=name)
        return PreparedCase(name, reference, case.image, case.properties, {"preprocess": time.perf_counter() - start})

    def predict_prepared(self, prepared: PreparedCase, on_windows: Callable[[int], None] | None = None) -> CasePrediction:
        """Sliding window, back to the input grid, argmax, postprocessing and per-label statistics.

        Consumes ``prepared.image`` (freed once the windows are done, to keep peak memory down).
        """
        with torch_threads(self.runtime.threads):
            return self._predict_prepared(prepared, on_windows)

    def _predict_prepared(self, prepared: PreparedCase, on_windows: Callable[[int], None] | None) -> CasePrediction:
        timings = dict(prepared.timings)
        start = time.perf_counter()
        model = self.compute_model(prepared.image.shape[1:])
        probabilities = predict_probabilities(model, prepared.image, self.config, self.runtime, on_windows)
        shape = list(prepared.image.shape[1:])
        prepared.image = np.empty((0,), dtype=np.float32)  # the preprocessed image is no longer needed
        if self.runtime.device.type == "cuda":
            torch.cuda.synchronize(self.runtime.device)
        timings["predict"] = time.perf_counter() - start
        start = time.perf_counter()
        labels, raw_probabilities = restore_labels(probabilities, prepared.properties, compute_device=self.runtime.device,
                                                   chunk_mb=self.config.restore_chunk_mb, keep_probabilities=self.config.save_probabilities)
        del probabilities
        timings["restore"] = time.perf_counter() - start
        start = time.perf_counter()
        spacing = prepared.reference.spacing
        removed = postprocess(labels, self.rules, spacing, self.config.connectivity)
        statistics = label_statistics(labels, self.model.labels, spacing, self.lesion_labels, self.config.connectivity)
        timings["postprocess"] = time.perf_counter() - start
        return CasePrediction(prepared.name, labels, prepared.reference, statistics, removed, raw_probabilities, timings, shape)

    def predict(self, volumes: Volume | Sequence[Volume], name: str = "case") -> CasePrediction:
        """Everything but the files: for notebooks and tests."""
        return self.predict_prepared(self.prepare(volumes, name))

    def sidecar(self, prediction: CasePrediction) -> dict[str, Any]:
        reference = prediction.reference
        return {
            "case": prediction.name,
            "medseg_version": __version__,
            "model": self.model.model_id(),
            "settings": {**self.runtime.describe(), "compiled": self.compiled, "overlap": self.config.overlap, "blending": "gaussian",
                         "tta_passes": len(self.mirrors), "folds": len(self.model.networks),
                         "postprocess": {self.model.labels[k]: rule.model_dump() for k, rule in self.rules.items()}},
            "input": {"format": reference.meta.get("format"), "shape": list(reference.shape),
                      "spacing_mm": [round(float(s), 6) for s in reference.spacing], "orientation": reference.orientation,
                      "channels": self.model.in_channels, "preprocessed_shape": prediction.preprocessed_shape},
            "labels": prediction.statistics,
            "postprocess_removed_voxels": {self.model.labels[k]: v for k, v in prediction.removed.items()},
            "runtime_s": {key: round(value, 3) for key, value in prediction.timings.items()},
        }


# --- many cases ---------------------------------------------------------------------------------
def _load(segmenter: Segmenter, case: CaseSource, series: str | None) -> PreparedCase:
    start = time.perf_counter()
    volumes = segmenter.read(case, series)
    read_s = time.perf_counter() - start
    prepared = segmenter.prepare(volumes, case.name)
    prepared.timings = {"read": read_s, **prepared.timings}
    return prepared


def _single_file_output(out: Path) -> bool:
    return out.name.endswith(MASK_SUFFIXES) and not out.is_dir()


def infer(
    model: str | Path | LoadedModel,
    source: str | Path,
    out: str | Path,
    config: InferConfig | None = None,
    *,
    series: str | None = None,
    progress: bool = False,
    segmenter: Segmenter | None = None,
) -> InferReport:
    """Infer every case of ``source`` into ``out``; failed cases are reported, the others written.

    ``out`` is a folder (created if needed), or a ``.nii.gz`` path when ``source`` is one case.
    Raises :class:`InferFailures` (a MedsegError, exit code 2) at the end if any case failed.
    """
    started = time.perf_counter()
    out = Path(out)
    segmenter = segmenter or Segmenter(model, config)
    discovery = discover_cases(source, segmenter.model.in_channels)
    single_file = _single_file_output(out)
    if single_file and not discovery.single:
        raise InputError(out, "is a file name, but INPUT holds several cases; give an output folder")
    (out.parent if single_file else out).mkdir(parents=True, exist_ok=True)
    report = InferReport()
    cases = discovery.cases
    segmenter.expected_cases = max(len(cases), 1)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="medseg-prefetch") as pool, InferProgress(progress, len(cases)) as bar:
        submit = (lambda case: pool.submit(_load, segmenter, case, series)) if segmenter.config.prefetch else None
        upcoming: Future | None = submit(cases[0]) if submit and cases else None
        for index, case in enumerate(cases):
            bar.start_case(case.name)
            try:
                prepared = upcoming.result() if upcoming is not None else _load(segmenter, case, series)
            except Exception as error:  # this case failed to load; the next still runs
                prepared, load_error = None, error
            upcoming = submit(cases[index + 1]) if submit and index + 1 < len(cases) else None
            try:
                if prepared is None:
                    raise load_error
                bar.start_windows(count_windows(tuple(prepared.image.shape[1:]), segmenter.model.patch_size, segmenter.config.overlap))
                prediction = segmenter.predict_prepared(prepared, bar.advance_windows)
                write_start = time.perf_counter()
                prediction.timings["total"] = sum(prediction.timings.values())  # compute time; reading overlaps the previous case
                sidecar = segmenter.sidecar(prediction)
                paths = output_paths(out, case.name, single_file)
                written = write_case(prediction.labels, prediction.reference, segmenter.model.labels, sidecar, paths,
                                     per_class=segmenter.config.per_class, probabilities=prediction.probabilities,
                                     compress_probabilities=segmenter.config.compress_probabilities)
                log.debug("%s: written in %.1f s", case.name, time.perf_counter() - write_start)
                report.outputs[case.name] = written
            except KeyboardInterrupt:
                raise
            except Exception as error:  # reported per case; the batch goes on
                if _is_memory_error(error):
                    error = _memory_error(case.name, error, segmenter.runtime.device, segmenter.runtime.sw_batch_size)
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                message = describe_error(error)
                report.failed[case.name] = message
                log.error("%s failed: %s", case.name, message)
                log.debug("traceback of %s", case.name, exc_info=error)
            finally:
                prepared = prediction = None
            bar.finish_case()
    report.seconds = time.perf_counter() - started
    if report.failed:
        raise InferFailures(report)
    return report

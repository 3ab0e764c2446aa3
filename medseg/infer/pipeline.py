"""`medseg infer` over many cases: discovery, sharding, prefetching, background writing and a summary.

The model is loaded once; a background thread reads and preprocesses the next case while the
current one is predicted (numpy, SimpleITK, gzip and torch release the GIL for their heavy work),
and another writes the finished case while the next is predicted. On CUDA the GPU is started and
warmed up while the first case is read.

Archive scale: ``shard=(k, n)`` keeps the cases whose name hashes to ``k`` of ``n`` (stable whatever
order or machine lists them), so ``n`` processes or SLURM array tasks split an archive without
talking to each other; ``skip_existing`` skips cases whose outputs are complete and current. Each
case is written as one transaction (:func:`medseg.infer.outputs.write_case`: old sidecar retired
first, files staged, published together, the sidecar last), so a case interrupted by a kill has no
sidecar and is simply redone, and a temporary or staging folder it left is removed on the next run.
Each run writes a JSON summary (``infer_summary.json``, or ``infer_summary_shard_k_of_n.json``).
"""

from __future__ import annotations

import logging
import shutil
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medseg.data.parallel import describe_error
from medseg.errors import ConfigError, InputError, MedsegError
from medseg.infer.config import InferConfig
from medseg.infer.inputs import CaseSource, discover_cases
from medseg.infer.model import LoadedModel
from medseg.infer.outputs import (
    MASK_SUFFIXES,
    OptionalOutput,
    OutputPaths,
    incomplete_reason,
    instances_output,
    output_paths,
    per_class_output,
    probabilities_output,
    uncertainty_output,
    write_case,
)
from medseg.infer.progress import InferProgress
from medseg.infer.segmenter import CasePrediction, PreparedCase, Segmenter
from medseg.io.atomic import leftover_temporaries, write_json

log = logging.getLogger(__name__)


@dataclass
class InferReport:
    outputs: dict[str, list[Path]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    not_written: dict[str, dict[str, str]] = field(default_factory=dict)  # case -> optional output -> why it was left out
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


class InferFailures(MedsegError):
    """Some cases of a batch failed; the others were written. Carries the report."""

    def __init__(self, report: InferReport):
        self.report = report
        shown = "; ".join(f"{name}: {message}" for name, message in list(report.failed.items())[:5])
        more = f"; and {len(report.failed) - 5} more" if len(report.failed) > 5 else ""
        total = len(report.failed) + len(report.outputs)
        super().__init__(f"{len(report.failed)} of {total} case(s) failed ({shown}{more})")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"2/4"`` -> (2, 4): the second of four shards (1-based, as SLURM array indices usually are)."""
    if text is None:
        return None
    index, sep, count = text.partition("/")
    try:
        k, n = int(index), int(count)
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected K/N, e.g. 1/4 for the first of four shards") from None
    if not sep or n < 1 or not 1 <= k <= n:
        raise ConfigError(f"--shard {text!r}: K must be between 1 and N, e.g. 1/4 ... 4/4")
    return k, n


def in_shard(name: str, shard: tuple[int, int] | None) -> bool:
    """Stable hash partition of case names: every name lands in exactly one of the N shards."""
    if shard is None:
        return True
    k, n = shard
    return zlib.crc32(name.encode()) % n == k - 1


def summary_path(out: Path, shard: tuple[int, int] | None) -> Path:
    return out / ("infer_summary.json" if shard is None else f"infer_summary_shard_{shard[0]}_of_{shard[1]}.json")


def _memory_error(name: str, error: BaseException, device: torch.device, sw_batch_size: int) -> MedsegError:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return MedsegError(f"{name}: out of GPU memory ({describe_error(error)[:120]}); try a smaller --sw-batch-size "
                           f"(now {sw_batch_size}), --stitch-device cpu, or --device cpu")
    return MedsegError(f"{name}: out of RAM on {device} ({describe_error(error)[:120]}); try --device cuda, "
                       "--stitch-device cpu, without --save-probabilities, or a smaller --set infer.restore_chunk_mb")


def _is_memory_error(error: BaseException) -> bool:
    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and ("can't allocate memory" in str(error) or "out of memory" in str(error).lower())


def _load(segmenter: Segmenter, case: CaseSource, series: str | None) -> PreparedCase:
    start = time.perf_counter()
    volumes = segmenter.read(case, series)
    read_s = time.perf_counter() - start
    prepared = segmenter.prepare(volumes, case.name)
    prepared.timings = {"read": read_s, **prepared.timings}
    return prepared


def _single_file_output(out: Path) -> bool:
    return out.name.endswith(MASK_SUFFIXES) and not out.is_dir()


def _wanted(segmenter: Segmenter) -> tuple[str, ...]:
    """The optional outputs this run asks for (:class:`medseg.infer.outputs.OptionalOutput` keys)."""
    config = segmenter.config
    asked = {"per_class": config.per_class, "probabilities": config.save_probabilities, "uncertainty": segmenter.uncertainty,
             "instances": segmenter.instances is not None, "dicom_seg": config.dicom_seg}
    return tuple(key for key, on in asked.items() if on)


def _select(cases: list[CaseSource], out: Path, single_file: bool, shard: tuple[int, int] | None, skip_existing: bool,
            report: InferReport, segmenter: Segmenter) -> list[CaseSource]:
    chosen = []
    leftovers = leftover_temporaries(out.parent if single_file else out)
    model_id, wanted = segmenter.model.model_id()["id"], _wanted(segmenter)
    for case in cases:
        if not in_shard(case.name, shard):
            continue
        paths = output_paths(out, case.name, single_file)
        for stale in (t for name in paths.names() for t in leftovers.get(name, [])):  # this case's own: never other shards'
            log.info("removing %s, left by an interrupted run", stale.name)
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        if skip_existing:
            reason = incomplete_reason(paths, model_id, wanted)
            if reason is None:
                report.skipped.append(case.name)
                continue
            if reason != "no sidecar":
                log.info("%s: redone (%s)", case.name, reason)
        chosen.append(case)
    return chosen


class _Writer:
    """Writes finished cases on a background thread, so the next case is predicted meanwhile."""

    def __init__(self, segmenter: Segmenter, out: Path, single_file: bool, report: InferReport):
        self.segmenter, self.out, self.single_file, self.report = segmenter, out, single_file, report
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medseg-write")
        self.pending: list[tuple[str, Future]] = []

    def submit(self, prediction: CasePrediction, case: CaseSource, series: str | None) -> None:
        self.pending.append((prediction.name, self.pool.submit(self._write, prediction, case, series)))

    def _dicom_seg(self, prediction: CasePrediction, case: CaseSource, series: str | None, paths: OutputPaths) -> OptionalOutput:
        model = self.segmenter.model

        def write(staged: Callable[[Path], Path]) -> tuple[list[Path], dict]:
            from medseg.io.dicom_seg import AlgorithmInfo, write_dicom_seg

            if not case.dicom:
                raise InputError(case.where, "not a DICOM series, so there is no series for a DICOM-SEG to reference")
            result = write_dicom_seg(prediction.reference.with_array(prediction.labels, role="label"), model.labels, case.where,
                                     staged(paths.dicom_seg), algorithm=AlgorithmInfo.from_model_id(model.model_id()), series=series,
                                     segmentation_type=self.segmenter.config.dicom_seg_type)
            return [paths.dicom_seg], {"segments": {str(segment.number): segment.name for segment in result.segments}}

        return OptionalOutput("dicom_seg", write)

    def _optional(self, prediction: CasePrediction, case: CaseSource, series: str | None, paths: OutputPaths) -> list[OptionalOutput]:
        """The outputs asked for beside the mask, in the order they are staged."""
        config, model = self.segmenter.config, self.segmenter.model
        optional = []
        if config.per_class:
            optional.append(per_class_output(prediction.labels, prediction.reference, model.labels, paths))
        if prediction.probabilities is not None:
            channel_names = model.probability_names or [model.labels[k] for k in sorted(model.labels)]
            optional.append(probabilities_output(prediction.probabilities, prediction.reference, channel_names, paths,
                                                 config.compress_probabilities))
        if prediction.uncertainty is not None:
            optional.append(uncertainty_output(prediction.uncertainty, prediction.reference, paths))
        instances = self.segmenter.instance_outputs(prediction)
        if instances is not None:
            optional.append(instances_output(*instances, prediction.reference, paths))
        if config.dicom_seg:
            optional.append(self._dicom_seg(prediction, case, series, paths))
        return optional

    def _write(self, prediction: CasePrediction, case: CaseSource, series: str | None) -> list[Path]:
        prediction.timings["total"] = sum(prediction.timings.values())  # compute time; reading overlaps the previous case
        paths = output_paths(self.out, prediction.name, self.single_file)
        written = write_case(prediction.labels, prediction.reference, self.segmenter.model.labels, self.segmenter.sidecar(prediction), paths,
                             self._optional(prediction, case, series, paths))
        if written.not_written:
            self.report.not_written[prediction.name] = written.not_written
        return written.files

    def close(self) -> None:
        for name, future in self.pending:
            try:
                self.report.outputs[name] = future.result()
            except Exception as error:  # reported per case
                self.report.failed[name] = describe_error(error)
                log.debug("writing %s failed", name, exc_info=error)
        self.pool.shutdown()


def _run_case(segmenter: Segmenter, prepared: PreparedCase | None, load_error: BaseException | None, bar: InferProgress) -> CasePrediction:
    if prepared is None:
        raise load_error  # type: ignore[misc]
    bar.start_windows(segmenter.windows(prepared.image.shape[1:]))
    return segmenter.predict_prepared(prepared, bar.advance_windows)


def _run_cases(segmenter: Segmenter, cases: list[CaseSource], series: str | None, writer: _Writer, report: InferReport, progress: bool) -> None:
    """Read the next case and write the last one while the current one is predicted; failures are per case."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="medseg-prefetch") as pool, InferProgress(progress, len(cases)) as bar:
        warm = pool.submit(segmenter.warm_up) if segmenter.runtime.cuda and cases else None
        submit = (lambda case: pool.submit(_load, segmenter, case, series)) if segmenter.config.prefetch else None
        upcoming: Future | None = submit(cases[0]) if submit and cases else None
        if warm is not None:
            warm.result()
        for index, case in enumerate(cases):
            bar.start_case(case.name)
            prepared, load_error = None, None
            try:
                prepared = upcoming.result() if upcoming is not None else _load(segmenter, case, series)
            except Exception as error:  # this case failed to load; the next still runs
                load_error = error
            upcoming = submit(cases[index + 1]) if submit and index + 1 < len(cases) else None
            try:
                writer.submit(_run_case(segmenter, prepared, load_error, bar), case, series)
            except KeyboardInterrupt:
                raise
            except Exception as error:  # reported per case; the batch goes on
                if _is_memory_error(error):
                    error = _memory_error(case.name, error, segmenter.runtime.device, segmenter.spec.sw_batch_size)
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                report.failed[case.name] = describe_error(error)
                log.debug("traceback of %s", case.name, exc_info=error)
            finally:
                prepared = None
            bar.finish_case()
        writer.close()


def infer(
    model: str | Path | LoadedModel,
    source: str | Path,
    out: str | Path,
    config: InferConfig | None = None,
    *,
    series: str | None = None,
    progress: bool = False,
    segmenter: Segmenter | None = None,
    shard: tuple[int, int] | None = None,
    skip_existing: bool = False,
) -> InferReport:
    """Infer every case of ``source`` (or of its ``shard``) into ``out``; failed cases are reported, the others written.

    ``out`` is a folder (created if needed), or a ``.nii.gz`` path when ``source`` is one case.
    Raises :class:`InferFailures` (a MedsegError, exit code 2) at the end if any case failed.
    """
    started = time.perf_counter()
    out = Path(out)
    segmenter = segmenter or Segmenter(model, config)
    discovery = discover_cases(source, segmenter.model.in_channels, segmenter.model.plan.case_folder, segmenter.missing_channels)
    single_file = _single_file_output(out)
    if single_file and not discovery.single:
        raise InputError(out, "is a file name, but INPUT holds several cases; give an output folder")
    if out.exists() and not out.is_dir() and not single_file:
        raise InputError(out, "exists and is not a folder; give an output folder (or a .nii.gz name for one case)")
    (out.parent if single_file else out).mkdir(parents=True, exist_ok=True)
    report = InferReport()
    cases = _select(discovery.cases, out, single_file, shard, skip_existing, report, segmenter)
    segmenter.expected_cases = max(len(cases), 1)
    _run_cases(segmenter, cases, series, _Writer(segmenter, out, single_file, report), report, progress)
    report.seconds = time.perf_counter() - started
    if not single_file:
        write_json(summary_path(out, shard), {
            "shard": None if shard is None else {"index": shard[0], "count": shard[1]}, "model": segmenter.model.model_id(),
            "written": sorted(report.outputs), "skipped_existing": sorted(report.skipped), "failed": report.failed,
            "not_written": dict(sorted(report.not_written.items())),
            "seconds": round(report.seconds, 2)})
    if report.failed:
        raise InferFailures(report)
    return report

"""Files of one inferred case, written as one transaction: the label map, optional outputs and the JSON sidecar.

Layout under the output folder::

    <case>.nii.gz                  multi-label mask on the input's exact grid (the primary output)
    <case>.json                    sidecar, written last: it names every file of the case (``files``)
    <case>/<label>.nii.gz          --per-class binary masks
    <case>_probabilities.npz       --save-probabilities: float16 (K, X, Y, Z) on the input grid (K classes, or one
                                   sigmoid per region for region models; channel names in "labels")
    <case>_seg.dcm                 --dicom-seg (DICOM series inputs): one DICOM-SEG object referencing the series
    <case>_entropy.nii.gz          --save-uncertainty: float32 predictive entropy on the input grid, nats / ln(K) in [0, 1]
    <case>_mutual_information.nii.gz   --save-uncertainty with TTA or several folds: their disagreement (BALD), same units
    <case>_instances.nii.gz        --instances (default for lesion_instances models): uint16 lesion instance ids on the input grid
    <case>_lesions.json            --instances: one record per instance id (label, voxels, volume, bbox in voxels and RAS mm,
                                   centroid, confidence); see medseg.infer.instances

(With ``-o mask.nii.gz`` the extra files are named after the mask: ``mask_entropy.nii.gz``, ...; the
uncertainty maps take the mask's suffix, ``.nii`` or ``.nii.gz``.) `medseg evaluate` and `medseg
report` skip uncertainty maps and instance maps whose case sits beside them (:data:`SIDE_MAP_SUFFIXES`).

The transaction (:func:`write_case`), so that after any failure or kill a case has either a complete,
current set of files or no sidecar at all:

1. *retire*: the case's old sidecar is removed first, then the files it listed (an older run's
   probabilities or SEG never stay beside a new mask; nothing it did not list is touched);
2. *stage*: every file is written into a hidden folder beside the outputs (``.<case>.json.<random>.tmp``);
3. *publish*: the staged files are renamed into place, the sidecar last.

Optional outputs never cost the primary one: a per-class mask, probability file, uncertainty map,
instance map or DICOM-SEG that cannot be written (or published) is left out, its reason goes to the
sidecar's ``not_written`` (``{"reason", "input"}``; for the SEG also ``dicom_seg.reason``) and to one
warning line; the mask and sidecar are still published. `--skip-existing` trusts a case only when the
files its sidecar lists are all there, the model that made it is the one running, and every optional
output asked for is there or was refused because of the input (:func:`incomplete_reason`).

The sidecar holds no patient identifiers: no names, IDs, dates or source paths, only the case
name the user's file was given, geometry, per-label volumes and the model's id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.data.parallel import describe_error
from medseg.errors import InputError
from medseg.io.atomic import TEMPORARY_NAME_LIMIT, write_json
from medseg.io.readers import write_label_map, write_volume
from medseg.io.volume import Volume

if TYPE_CHECKING:
    from medseg.infer.uncertainty import UncertaintyMaps

log = logging.getLogger(__name__)

MASK_SUFFIXES = (".nii.gz", ".nii")
ENTROPY_SUFFIX, MUTUAL_INFORMATION_SUFFIX = "_entropy", "_mutual_information"
UNCERTAINTY_SUFFIXES = (ENTROPY_SUFFIX, MUTUAL_INFORMATION_SUFFIX)  # appended to the case name, before the extension
INSTANCES_SUFFIX, LESIONS_SUFFIX = "_instances", "_lesions"  # the instance map (mask suffix) and its records (.json)
SIDE_MAP_SUFFIXES = (*UNCERTAINTY_SUFFIXES, INSTANCES_SUFFIX)  # volumes beside a case's mask that are not cases themselves


@dataclass
class OutputPaths:
    mask: Path
    sidecar: Path
    per_class_dir: Path
    probabilities: Path

    def _beside_mask(self, tail: str, suffix: str | None = None) -> Path:
        """``<mask stem><tail><suffix>`` beside the mask (``suffix`` None: the mask's own)."""
        mask_suffix = next(s for s in MASK_SUFFIXES if self.mask.name.endswith(s))
        return self.mask.with_name(self.mask.name[: -len(mask_suffix)] + tail + (mask_suffix if suffix is None else suffix))

    @property
    def folder(self) -> Path:
        return self.mask.parent

    @property
    def dicom_seg(self) -> Path:
        return self._beside_mask("_seg", ".dcm")

    @property
    def entropy(self) -> Path:
        return self._beside_mask(ENTROPY_SUFFIX)

    @property
    def mutual_information(self) -> Path:
        return self._beside_mask(MUTUAL_INFORMATION_SUFFIX)

    @property
    def instances(self) -> Path:
        return self._beside_mask(INSTANCES_SUFFIX)

    @property
    def lesions(self) -> Path:
        return self._beside_mask(LESIONS_SUFFIX, ".json")

    def files(self) -> tuple[Path, ...]:
        """Every single file this case may write beside the mask (the per-class folder aside), the sidecar last."""
        return (self.mask, self.probabilities, self.dicom_seg, self.entropy, self.mutual_information, self.instances, self.lesions, self.sidecar)

    @property
    def staging_key(self) -> str:
        """How :func:`medseg.io.atomic.leftover_temporaries` keys this case's staging folder (no output file has this name)."""
        return f"{self.sidecar.name[:TEMPORARY_NAME_LIMIT]}.staging"

    def names(self) -> list[str]:
        """The names under which this case leaves temporaries in the output folder, as
        :func:`medseg.io.atomic.leftover_temporaries` keys them: its staging folder, the sidecar's temporary, and a mask
        temporary of older medseg. Never a side file's name: ``<case>_entropy.nii.gz`` may be another case's mask."""
        return [self.staging_key, self.sidecar.name[:TEMPORARY_NAME_LIMIT], self.mask.name[:TEMPORARY_NAME_LIMIT]]


def safe_name(name: str) -> str:
    """A label or case name usable as a file name (no separators or odd characters)."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._")
    return cleaned or "unnamed"


def output_paths(out: Path, case: str, single_file: bool = False) -> OutputPaths:
    """Where a case's outputs go; ``single_file``: ``out`` is the mask path itself (``-o mask.nii.gz``)."""
    if single_file:
        suffix = next(s for s in MASK_SUFFIXES if out.name.endswith(s))
        stem = out.name[: -len(suffix)]
        return OutputPaths(out, out.with_name(f"{stem}.json"), out.with_name(stem), out.with_name(f"{stem}_probabilities.npz"))
    return OutputPaths(out / f"{case}.nii.gz", out / f"{case}.json", out / case, out / f"{case}_probabilities.npz")


@dataclass(frozen=True)
class OptionalOutput:
    """One output the user asked for beside the mask. ``write`` writes it at the staged paths it is given
    (``staged(final) -> path in the staging folder``) and returns the final paths it wrote, plus an
    optional JSON-able record for the sidecar (under ``key``'s record, e.g. the SEG's segments)."""

    key: str  # its name in the sidecar: "per_class", "probabilities", "uncertainty", "instances", "dicom_seg"
    write: Callable[[Callable[[Path], Path]], tuple[list[Path], dict[str, Any] | None]]


@dataclass
class CaseWrite:
    """What a case transaction published (final paths, the sidecar last) and the optional outputs it left out, with why."""

    files: list[Path]
    not_written: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- the optional outputs medseg infer writes


def per_class_files(names: dict[int, str]) -> dict[int, str]:
    """Label value -> its per-class file name: the label's safe name, plus ``_<value>`` where two names would give one
    file (``left kidney``/``left/kidney``; ``Liver``/``liver`` on a case-insensitive file system)."""
    taken: set[str] = set()
    files = {}
    for index, name in sorted(names.items()):
        if index == 0:
            continue
        stem = safe_name(name)
        stem = f"{stem}_{index}" if stem.lower() in taken else stem
        taken.add(stem.lower())
        files[index] = f"{stem}.nii.gz"
    return files


def per_class_output(labels: np.ndarray, reference: Volume, names: dict[int, str], paths: OutputPaths) -> OptionalOutput:
    def write(staged: Callable[[Path], Path]) -> tuple[list[Path], None]:
        files = per_class_files(names)
        staged(paths.per_class_dir).mkdir(exist_ok=True)
        for index, file in files.items():
            write_label_map((labels == index).view(np.uint8), reference, staged(paths.per_class_dir / file))
        return [paths.per_class_dir / file for file in files.values()], None

    return OptionalOutput("per_class", write)


def probabilities_output(probabilities: np.ndarray, reference: Volume, channel_names: list[str], paths: OutputPaths,
                         compress: bool) -> OptionalOutput:
    def write(staged: Callable[[Path], Path]) -> tuple[list[Path], None]:
        save = np.savez_compressed if compress else np.savez
        with open(staged(paths.probabilities), "wb") as handle:  # a file object: numpy adds no ".npz" of its own
            save(handle, probabilities=probabilities, affine=reference.affine, labels=np.array(channel_names))
        return [paths.probabilities], None

    return OptionalOutput("probabilities", write)


def uncertainty_output(maps: UncertaintyMaps, reference: Volume, paths: OutputPaths) -> OptionalOutput:
    """float32 maps with the mask's grid and header (image role: they are values, not labels)."""

    def write(staged: Callable[[Path], Path]) -> tuple[list[Path], None]:
        finals = []
        for values, final in ((maps.entropy, paths.entropy), (maps.mutual_information, paths.mutual_information)):
            if values is not None:
                write_volume(reference.with_array(np.asarray(values, dtype=np.float32), role="image"), staged(final))
                finals.append(final)
        return finals, None

    return OptionalOutput("uncertainty", write)


def instances_output(instance_map: np.ndarray, document: dict[str, Any], reference: Volume, paths: OutputPaths) -> OptionalOutput:
    """The uint16 instance map with the mask's grid and header, then its records (naming the map's file)."""

    def write(staged: Callable[[Path], Path]) -> tuple[list[Path], None]:
        if instance_map.shape != reference.shape:
            raise ValueError(f"instance map {instance_map.shape} is not on the input grid {reference.shape}")
        write_volume(reference.with_array(instance_map.astype(np.uint16, copy=False), role="label"), staged(paths.instances))
        write_json(staged(paths.lesions), document | {"instance_map": paths.instances.name}, make_parents=False)
        return [paths.instances, paths.lesions], None

    return OptionalOutput("instances", write)


# ---------------------------------------------------------------- the transaction


def _old_sidecar(paths: OutputPaths) -> dict[str, Any] | None:
    try:
        document = json.loads(paths.sidecar.read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _listed_files(document: dict[str, Any], paths: OutputPaths) -> list[Path] | None:
    """The files a sidecar vouches for, as paths in the case's folder (None: it lists none; older medseg: its outputs)."""
    names = document.get("files")
    if not isinstance(names, list):
        outputs = document.get("outputs")
        if not isinstance(outputs, dict):
            return None
        names = [value for value in outputs.values() if isinstance(value, str)]
        names += [item for value in outputs.values() if isinstance(value, list) for item in value if isinstance(item, str)]
    return [paths.folder / name for name in names if isinstance(name, str)]


def _own_listed_files(old: dict[str, Any] | None, paths: OutputPaths) -> list[Path]:
    """What an old sidecar of this case vouched for, limited to names this case can own (its side files and per-class
    masks): a hand-edited sidecar never makes the retire step delete anything else."""
    if old is None:
        return []
    own = set(paths.files())
    return [path for path in _listed_files(old, paths) or [] if path in own or path.parent == paths.per_class_dir]


def retire_case(paths: OutputPaths) -> None:
    """Remove a case's previous outputs, its sidecar first: from then on no old sidecar vouches for a new or missing file.

    Only what the old sidecar listed goes (and the mask, which is rewritten anyway): a file medseg did not write
    for this case, another case's mask named like a side file, or a user's file in the per-class folder stays.
    """
    old = _old_sidecar(paths)
    paths.sidecar.unlink(missing_ok=True)
    for path in [*_own_listed_files(old, paths), paths.mask]:
        path.unlink(missing_ok=True)
    if paths.per_class_dir.is_dir():
        with contextlib.suppress(OSError):  # not empty: the folder holds files medseg did not write
            paths.per_class_dir.rmdir()


#: Optional output -> the sidecar ``outputs`` entry that names its (first) file.
_OUTPUT_ENTRY = {"per_class": "per_class", "probabilities": "probabilities", "uncertainty": "entropy", "instances": "instances",
                 "dicom_seg": "dicom_seg"}


def incomplete_reason(paths: OutputPaths, model_id: str | None = None, wanted: Iterable[str] = ()) -> str | None:
    """Why a case's outputs cannot be trusted as complete (None: they can). ``--skip-existing`` skips only those.

    Complete: the sidecar names files that are all there, the running model made them, and each ``wanted`` optional
    output (:class:`OptionalOutput` keys) is there or was refused because of the input (a negative study's SEG):
    one that failed for another reason (a full disk) is tried again.
    """
    if not paths.sidecar.is_file():
        return "no sidecar"
    document = _old_sidecar(paths)
    if document is None:
        return f"its sidecar {paths.sidecar.name} is not readable JSON"
    listed = _listed_files(document, paths)
    if not listed:
        return f"its sidecar {paths.sidecar.name} names no files"
    missing = [path.name for path in listed if not path.is_file()]
    if missing:
        return f"its sidecar names {missing[0]}, which is missing"
    made_by = (document.get("model") or {}).get("id") if isinstance(document.get("model"), dict) else None
    if model_id is not None and made_by != model_id:
        return f"it was made by model {made_by}, not by {model_id}"
    outputs = document.get("outputs") if isinstance(document.get("outputs"), dict) else {}
    refused = document.get("not_written") if isinstance(document.get("not_written"), dict) else {}
    for key in wanted:
        record = refused.get(key)
        if not outputs.get(_OUTPUT_ENTRY[key]) and not (isinstance(record, dict) and record.get("input")):
            return f"its {key.replace('_', '-')} was asked for and is not there"
    return None


def _staging_folder(paths: OutputPaths) -> Path:
    """A hidden folder beside the outputs, named so :func:`medseg.io.atomic.leftover_temporaries` keys it by the sidecar."""
    return Path(tempfile.mkdtemp(prefix=f".{paths.staging_key}.", suffix=".tmp", dir=paths.folder))


def _left_out(key: str, error: Exception, case: str) -> dict[str, Any]:
    """An optional output that failed: warned once, recorded (``input``: refused because of the input, not retried)."""
    reason = _reason(error)
    log.warning("%s: %s not written: %s", case, key.replace("_", "-"), reason)
    log.debug("writing %s of %s failed", key, case, exc_info=error)
    return {"reason": reason, "input": isinstance(error, InputError)}


def _stage_optional(output: OptionalOutput, staged: Callable[[Path], Path], case: str) -> tuple[list[Path], dict | None, dict | None]:
    try:
        finals, record = output.write(staged)
        return finals, record, None
    except Exception as error:  # an optional output never costs the mask: recorded, warned, left out
        return [], None, _left_out(output.key, error, case)


#: An absolute path's folders (POSIX or Windows), quoted (spaces allowed) or bare: reasons name files by their name only.
_QUOTED_FOLDERS = re.compile(r"""(['"])(?:[A-Za-z]:)?[/\\][^'"]*[/\\]([^'"/\\]*)\1""")
_FOLDERS = re.compile(r"(?:[A-Za-z]:)?[/\\](?:[^\s'\"/\\]+[/\\])+")


def _reason(error: Exception) -> str:
    """One line for the sidecar and the log: files named by their name only (folders can hold patient names)."""
    if isinstance(error, InputError) and error.path is not None:
        text = f"{error.path.name}: {error.problem}"
    elif isinstance(error, OSError) and error.strerror:
        text = f"{type(error).__name__}: {error.strerror}" + (f" ({Path(error.filename).name})" if error.filename else "")
    else:
        text = describe_error(error)
    return _FOLDERS.sub("", _QUOTED_FOLDERS.sub(r"\1\2\1", text))


def _publish(staging: Path, finals: list[Path], paths: OutputPaths) -> list[Path]:
    """Rename staged files into place (per-class files into their folder); on failure take back what moved."""
    published: list[Path] = []
    try:
        for final in finals:
            if final.parent == paths.per_class_dir:
                final.parent.mkdir(exist_ok=True)
            os.replace(staging / final.relative_to(paths.folder), final)
            published.append(final)
    except BaseException:
        for path in published:
            path.unlink(missing_ok=True)
        raise
    return published


def _publish_optional(staging: Path, staged: list[tuple[str, list[Path]]], paths: OutputPaths, case: str,
                      not_written: dict[str, dict]) -> list[Path]:
    """Each optional output's files go in together or not at all; one that cannot (a file where its folder should be)
    is left out and recorded, never costing the mask already published."""
    published: list[Path] = []
    for key, finals in staged:
        try:
            published += _publish(staging, finals, paths)
        except Exception as error:
            not_written[key] = _left_out(key, error, case)
    return published


def write_case(labels: np.ndarray, reference: Volume, names: dict[int, str], sidecar: dict[str, Any], paths: OutputPaths,
               optional: Iterable[OptionalOutput] = ()) -> CaseWrite:
    """Retire the case's old outputs, stage the mask and every optional output, publish them, the sidecar last.

    The mask and the sidecar are the case: if either fails, nothing of the case is left (and the error
    is raised). An optional output that fails is left out and recorded (:class:`CaseWrite.not_written`).
    """
    retire_case(paths)
    staging = _staging_folder(paths)
    case = str(sidecar.get("case", paths.mask.name))
    published: list[Path] = []
    try:

        def staged(final: Path) -> Path:
            return staging / final.relative_to(paths.folder)

        write_label_map(labels, reference, staged(paths.mask))
        staged_outputs, records, not_written = [], {}, {}
        for output in optional:
            written, record, left_out = _stage_optional(output, staged, case)
            if left_out is not None:
                not_written[output.key] = left_out
                continue
            staged_outputs.append((output.key, written))
            if record is not None:
                records[output.key] = record
        published = _publish(staging, [paths.mask], paths)
        published += _publish_optional(staging, staged_outputs, paths, case, not_written)
        write_json(paths.sidecar, _sidecar_document(sidecar, paths, published, records, not_written), make_parents=False)
    except BaseException:
        for path in published:
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            paths.per_class_dir.rmdir()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CaseWrite([*published, paths.sidecar], {key: entry["reason"] for key, entry in not_written.items()})


def _sidecar_document(sidecar: dict[str, Any], paths: OutputPaths, finals: list[Path], records: dict[str, dict],
                      not_written: dict[str, dict]) -> dict[str, Any]:
    """The sidecar: what the segmenter measured, plus the files it vouches for and the optional outputs left out."""
    written = set(finals)
    document = dict(sidecar)
    document["outputs"] = {
        "mask": paths.mask.name,
        "per_class": [str(p.relative_to(paths.folder)) for p in finals if p.parent == paths.per_class_dir],
        "probabilities": paths.probabilities.name if paths.probabilities in written else None,
        "dicom_seg": paths.dicom_seg.name if paths.dicom_seg in written else None,
    }
    if "uncertainty" in document or paths.entropy in written:
        document["outputs"] |= {"entropy": paths.entropy.name if paths.entropy in written else None,
                                "mutual_information": paths.mutual_information.name if paths.mutual_information in written else None}
    if "instances" in document or paths.instances in written:
        document["outputs"] |= {"instances": paths.instances.name if paths.instances in written else None,
                                "lesions": paths.lesions.name if paths.lesions in written else None}
    if "dicom_seg" in records or "dicom_seg" in not_written:
        document["dicom_seg"] = {"file": document["outputs"]["dicom_seg"], **(records.get("dicom_seg") or {}),
                                 "reason": (not_written.get("dicom_seg") or {}).get("reason")}
    document["not_written"] = dict(not_written)
    document["files"] = [str(p.relative_to(paths.folder)) for p in finals]
    return document

"""Hostile inputs made in the test (no binaries committed): configs, checkpoints, archives, datasets, evaluation folders."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.data._builders import make_msd

SEED = 20240612


@dataclass
class Hostile:
    """One refused command: its arguments, the file the error line must name and what it must say."""

    args: list
    named: str | Path
    expected: str
    out_dir: Path | None = None
    rss_limit_mb: float = 500.0
    not_created: list[Path] = field(default_factory=list)  # files a successful attack would have written


def random_bytes(path: Path, size: int = 4096) -> Path:
    path.write_bytes(np.random.default_rng(SEED).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def tiny_dataset(root: Path, cases: int = 2) -> Path:
    return make_msd(root, cases=cases, shape=(12, 10, 8), seed=3)


def edit_dataset_json(root: Path, **changes) -> Path:
    path = root / "dataset.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
    return path


# --- checkpoints ----------------------------------------------------------------------------------


def valid_payload():
    """A real (untrained) medseg checkpoint payload: a small DynUNet built from a tiny plan."""
    from medseg.config.loader import load_config
    from medseg.models.registry import build_model
    from medseg.train.checkpoint import inference_checkpoint
    from tests.schema._builders import tiny_plan

    config = load_config(None, ["model.base_features=4", "model.max_features=16"])
    plan = tiny_plan()
    configuration = plan.configuration("3d")
    network = build_model(config.model, 1, len(plan.labels), configuration.network_plan())
    return inference_checkpoint(network, config, plan, configuration, in_channels=1)


def torch_save(data, path: Path) -> Path:
    import torch

    torch.save(data, path)
    return path


class RunsCode:
    """Unpickling this calls os.system: a checkpoint that would run code if loaded with pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def code_running_pickle(path: Path, marker: Path, torch_format: bool) -> Path:
    payload = {"format_version": 2, "model": RunsCode(marker)}
    if torch_format:
        return torch_save(payload, path)
    path.write_bytes(pickle.dumps(payload, protocol=4))
    return path


# --- archives -------------------------------------------------------------------------------------


def tar_archive(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def corrupt_zip(path: Path) -> Path:
    """A zip whose central directory is cut off (the end of a real zip, then noise)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("Task99_Fake/dataset.json", "{}")
    path.write_bytes(buffer.getvalue()[:30] + random_bytes(path, 200).read_bytes())
    return path


def recipe_for(archive: Path, kind: str = "tar", verified: bool = True) -> Path:
    """A recipe YAML that downloads ``archive`` from a file:// URL (checksum-verified unless ``verified=False``)."""
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    source = f"checksum: md5:{md5}" if verified else "unverified_reason: a test archive"
    path = archive.with_name(archive.name.replace(".", "_") + "_recipe.yaml")
    path.write_text(
        "name: Task99_Fake\ndescription: test\nhomepage: https://example.invalid\nlicense: CC0\ncitation: none\n"
        'modality: {"0": CT}\nlabels: {"0": background, "1": tumor}\ncases: "1"\nlayout: msd\nconversion: none\n'
        f"dataset_folder: Task99_Fake\nsources:\n  - url: {archive.as_uri()}\n    {source}\n    archive: {kind}\n"
    )
    return path


# --- evaluation folders -----------------------------------------------------------------------------


def eval_folder(root: Path, cases_csv: bytes | str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    summary = {"metrics": {"liver": {}}, "labels": [{"name": "liver", "values": [1]}], "case_ids": ["case_a"]}
    (root / "summary.json").write_text(json.dumps(summary))
    (root / "cases.csv").write_bytes(cases_csv if isinstance(cases_csv, bytes) else cases_csv.encode())
    return root

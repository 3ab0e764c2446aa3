"""Inference with a modality missing: explicit (infer.missing_channels / --missing-modality) works end to end;
an accidentally missing channel file stays a one-line error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.errors import ConfigError, InputError
from medseg.io.readers import read_volume


@pytest.fixture(scope="module")
def brats_run(tmp_path_factory) -> dict[str, Path]:
    """BraTS-like case folders (FLAIR + T1c), imported, and a mid-fusion model trained 3 steps with modality dropout."""
    from medseg.data.importer import import_dataset, resolve_spec
    from medseg.train.api import prepare_cache
    from medseg.train.trainer import Trainer
    from tests.data._builders import brats_like
    from tests.train.conftest import tiny_config

    root = tmp_path_factory.mktemp("missing_modality")
    src = brats_like(root / "src", cases=2, shape=(40, 36, 20))
    import_dataset(src, root / "dataset", resolve_spec(preset="brats2015"))
    settings = ["plan.target_spacing=[1.5,1.5,1.5]", "train.patch_size=[16,16,16]", "train.fold=all", "train.epochs=1",
                "train.iterations_per_epoch=3", "train.val_patch_batches=1", "model.name=dynunet_midfusion", "augment.modality_dropout_prob=0.5"]
    cache = prepare_cache(root / "dataset", tiny_config(f"work_dir={root / 'work'}", *settings), progress=False)
    threads = torch.get_num_threads()
    try:
        Trainer(tiny_config(*settings), cache, root / "run", progress=False).fit()
    finally:
        torch.set_num_threads(threads)
    without_t1c = root / "without_t1c" / "pat00"
    shutil.copytree(src / "pat00", without_t1c)
    (without_t1c / "T1c_subtrMeanDivStd.nii.gz").unlink()
    return {"src": src, "dataset": root / "dataset", "run": root / "run", "without_t1c": without_t1c}


def _segmenter(run: Path, *missing: str | int):
    from medseg.infer import InferConfig, Segmenter

    return Segmenter(run, InferConfig(threads=1, missing_channels=list(missing)))


def test_channel_names_resolve_case_insensitively_or_by_index(brats_run):
    from medseg.infer.missing import channel_names, resolve_missing_channels

    plan = _segmenter(brats_run["run"]).model.plan
    assert channel_names(plan) == ["FLAIR", "T1c"]
    assert resolve_missing_channels(["t1C"], plan) == (1,) and resolve_missing_channels([0, "0"], plan) == (0,)
    with pytest.raises(ConfigError, match=r"'T2' is not a channel of this model; its channels are 0 \(FLAIR\), 1 \(T1c\)"):
        resolve_missing_channels(["T2"], plan)
    with pytest.raises(ConfigError, match="every channel"):
        resolve_missing_channels(["FLAIR", "T1c"], plan)


def test_an_accidentally_missing_channel_file_is_a_one_line_error(brats_run, tmp_path, capsys):
    from medseg.cli import infer_cmd, main
    from medseg.infer import infer

    segmenter = _segmenter(brats_run["run"])
    folder = brats_run["without_t1c"]
    with pytest.raises(InputError, match=r"no file matches the channel 1 \(T1c\*\) pattern .*--missing-modality") as caught:
        infer(segmenter.model, folder, tmp_path / "out", segmenter=segmenter)
    assert caught.value.path == folder and not (tmp_path / "out").exists()
    if not any(getattr(command.callback, "__name__", "") == "infer" for command in main.app.registered_commands):
        infer_cmd.register(main.app)
    with pytest.raises(SystemExit) as exit_info:
        main.main(["infer", str(brats_run["run"]), str(folder), "-o", str(tmp_path / "cli"), "--set", "infer.threads=1"])
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {folder}: no file matches the channel 1")


def test_missing_modality_named_on_purpose_runs_end_to_end(brats_run, tmp_path):
    from medseg.cli import infer_cmd, main
    from medseg.infer import infer

    if not any(getattr(command.callback, "__name__", "") == "infer" for command in main.app.registered_commands):
        infer_cmd.register(main.app)
    with pytest.raises(SystemExit) as exit_info:
        main.main(["infer", str(brats_run["run"]), str(brats_run["without_t1c"]), "-o", str(tmp_path / "cli"),
                   "--missing-modality", "T1c", "--set", "infer.threads=1"])
    assert exit_info.value.code in (0, None)
    sidecar = json.loads((tmp_path / "cli" / "pat00.json").read_text())
    assert sidecar["input"]["missing_channels"] == ["T1c"] and any("T1c missing" in w for w in sidecar["warnings"])
    flair = read_volume(brats_run["src"] / "pat00" / "Flair_subtrMeanDivStd.nii.gz")
    mask = read_volume(tmp_path / "cli" / "pat00.nii.gz", role="label")
    assert mask.shape == flair.shape and np.allclose(mask.affine, flair.affine)

    # The T1c file of a complete case is not read when T1c is named missing: the same mask as without the file.
    segmenter = _segmenter(brats_run["run"], "t1c")
    infer(segmenter.model, brats_run["src"] / "pat00", tmp_path / "full", segmenter=segmenter)
    assert np.array_equal(read_volume(tmp_path / "full" / "pat00.nii.gz", role="label").array, mask.array)
    # What the network sees: the missing channel exactly 0 on the preprocessed grid, the other as without the flag.
    from medseg.infer.inputs import discover_cases

    (case,) = discover_cases(brats_run["without_t1c"], 2, segmenter.model.plan.case_folder, segmenter.missing_channels).cases
    prepared = segmenter.prepare(segmenter.read(case), "pat00")
    complete = _segmenter(brats_run["run"])
    (full_case,) = discover_cases(brats_run["src"] / "pat00", 2, complete.model.plan.case_folder).cases
    reference = complete.prepare(complete.read(full_case), "pat00")
    assert not np.asarray(prepared.image[1]).any() and np.asarray(reference.image[1]).any()
    assert np.array_equal(np.asarray(prepared.image[0]), np.asarray(reference.image[0]))


def test_channel_files_named_by_index_with_one_missing(brats_run, tmp_path):
    """nnU-Net-style <case>_NNNN files: a lone _0000 is refused, unless channel 1 is named missing."""
    from medseg.infer.inputs import discover_cases, read_case

    folder = tmp_path / "cases"
    folder.mkdir()
    shutil.copy(brats_run["dataset"] / "imagesTr" / "pat00_0000.nii.gz", folder)
    with pytest.raises(InputError, match="has channel files _0000; the model takes 2 .*--missing-modality"):
        discover_cases(folder / "pat00_0000.nii.gz", 2)
    assert "--missing-modality" in discover_cases(folder, 2).cases[0].problem  # a folder: reported per case
    (case,) = discover_cases(folder, 2, missing=(1,)).cases
    volumes = read_case(case, 2, 3)
    assert case.name == "pat00" and len(volumes) == 2 and not volumes[1].array.any() and volumes[1].meta["missing_channel"] == 1
    shutil.copy(brats_run["dataset"] / "imagesTr" / "pat00_0001.nii.gz", folder)  # present but named missing: not read
    (case,) = discover_cases(folder, 2, missing=(1,)).cases
    assert [path.name for path in case.paths] == ["pat00_0000.nii.gz"]
    (case,) = discover_cases(folder, 2, missing=(0,)).cases
    assert [path.name for path in case.paths] == ["pat00_0001.nii.gz"] and read_case(case, 2, 3)[0].meta["missing_channel"] == 0

"""`medseg bench peer nnunet`: medseg's folds as nnU-Net's splits, the wall-clock poly schedule, the pinned install,
and (slow, with nnunetv2 installed) both tools end to end on a tiny synthetic dataset."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from medseg.bench.peers import install
from medseg.bench.peers.nnunet_dataset import SPLITS_FILE, dataset_folder_name, write_nnunet_raw
from medseg.bench.peers.report import render_markdown
from medseg.bench.peers.wall_clock import WallClockPolyLR
from medseg.data.dataset import load_dataset
from medseg.errors import ConfigError, InputError, MedsegError
from medseg.train.config import TrainConfig
from medseg.train.splits import fold_cases, load_or_create_splits


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from medseg.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("peer") / "data", cases=7, seed=5, fov_mm=(48.0, 48.0, 32.0))


def test_splits_final_holds_medsegs_folds_and_the_raw_layout_links_the_originals(synthetic, tmp_path):
    description = load_dataset(synthetic)
    ids = [case.case_id for case in description.cases]
    splits = load_or_create_splits(tmp_path / "cache" / "splits.json", ids, 5, 12345)
    folder = write_nnunet_raw(description, splits, tmp_path / "raw")
    assert folder.name == dataset_folder_name(description) == "Dataset990_SyntheticLiverTumor"
    written = json.loads((folder / SPLITS_FILE).read_text())
    for fold in range(5):  # the very call medseg's trainer makes for its fold
        train_ids, val_ids, _ = fold_cases(tmp_path / "cache", ids, TrainConfig(fold=fold, num_folds=5))
        assert written[fold] == {"train": train_ids, "val": val_ids}
    assert sorted(case for fold in written for case in fold["val"]) == sorted(ids)
    images = sorted(path.name for path in (folder / "imagesTr").iterdir())
    assert images == [f"{case}_0000.nii.gz" for case in sorted(ids)]  # nnU-Net's identifiers are medseg's case ids
    first = description.cases[0]
    assert os.path.realpath(folder / "imagesTr" / f"{first.case_id}_0000.nii.gz") == str(first.images[0].resolve())
    assert os.path.realpath(folder / "labelsTr" / f"{first.case_id}.nii.gz") == str(first.label.resolve())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert dataset_json["labels"] == {"background": 0, "liver": 1, "tumor": 2} and dataset_json["numTraining"] == len(ids)
    assert dataset_json["channel_names"] == {"0": "CT"} and dataset_json["file_ending"] == ".nii.gz"


def test_the_bench_takes_every_fold_from_the_call_medsegs_trainer_makes(synthetic, tmp_path):
    from medseg.bench.peers.nnunet import medseg_folds
    from medseg.data.cache import cached_case_ids
    from tests.train.conftest import TINY_OVERRIDES

    overrides = [*TINY_OVERRIDES, "train.num_folds=3", f"work_dir={tmp_path / 'cache'}"]
    with pytest.raises(ConfigError, match="--fold 3 but medseg makes 3 folds"):
        medseg_folds(synthetic, None, overrides, 3)
    assert not (tmp_path / "cache").exists()  # refused before any preprocessing
    config, cache, splits, description = medseg_folds(synthetic, None, overrides, 1)
    ids = cached_case_ids(cache)
    assert len(splits) == 3 and sorted(case for fold in splits for case in fold["val"]) == sorted(ids)
    train_ids, val_ids, _ = fold_cases(cache, ids, config.train)  # what Trainer(config, cache) holds out for fold 1
    assert config.train.fold == 1 and splits[1] == {"train": sorted(train_ids), "val": sorted(val_ids)}
    assert [case.case_id for case in description.cases] == sorted(ids)


def _msd(root, labels, channels=1):
    """A two-case MSD folder; with ``channels`` > 1 each image is one 4D file (channels last)."""
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    for index in range(2):
        shape = (6, 5, 4, channels) if channels > 1 else (6, 5, 4)
        image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + index
        nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTr" / f"c{index}.nii.gz"))
        nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.uint8), affine), str(root / "labelsTr" / f"c{index}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({
        "name": "Tiny", "modality": {str(c): f"MR{c}" for c in range(channels)}, "labels": labels,
        "training": [{"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"} for i in range(2)]}))
    return root


def test_a_four_dimensional_msd_image_becomes_one_file_per_channel(tmp_path):
    description = load_dataset(_msd(tmp_path / "msd", {"0": "background", "1": "tumour"}, channels=2))
    folder = write_nnunet_raw(description, [{"train": ["c0"], "val": ["c1"]}], tmp_path / "raw")
    source = nib.load(str(tmp_path / "msd" / "imagesTr" / "c1.nii.gz"))
    for channel in range(2):
        written = nib.load(str(folder / "imagesTr" / f"c1_{channel:04d}.nii.gz"))
        assert written.shape == (6, 5, 4) and np.allclose(written.affine, source.affine)
        assert np.array_equal(np.asanyarray(written.dataobj), np.asanyarray(source.dataobj)[..., channel])
    assert json.loads((folder / "dataset.json").read_text())["channel_names"] == {"0": "MR0", "1": "MR1"}


def test_labels_nnunet_cannot_take_give_one_input_error(tmp_path):
    description = load_dataset(_msd(tmp_path / "msd", {"0": "background", "1": "a", "3": "b"}))
    with pytest.raises(InputError, match="consecutive label values 0..N, this dataset has \\[0, 1, 3\\]"):
        write_nnunet_raw(description, [{"train": ["c0"], "val": ["c1"]}], tmp_path / "raw")


def _schedule(budget_s=100.0, total=1000):
    now = [0.0]
    optimizer = SimpleNamespace(param_groups=[{"lr": 0.5}, {"lr": 0.5}])
    schedule = WallClockPolyLR(optimizer, 0.01, budget_s, total, clock=lambda: now[0])
    return schedule, optimizer, now


def test_the_poly_rate_follows_the_wall_clock_and_reaches_zero_at_the_budget():
    schedule, optimizer, now = _schedule()
    schedule.start()
    schedule.step()
    assert [group["lr"] for group in optimizer.param_groups] == [0.01, 0.01] and not schedule.expired()
    now[0] = 50.0
    schedule.step(0)  # nnU-Net's once-per-epoch step(epoch): the epoch is ignored, the clock decides
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**0.9) and schedule.get_last_lr() == [pytest.approx(0.01 * 0.5**0.9)]
    now[0] = 99.0
    schedule.step(999)
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.01 * 0.01**0.9) and not schedule.expired()
    now[0] = 100.0
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == 0.0 and schedule.expired() and schedule.elapsed_s() == 100.0


def test_nnunets_own_iteration_count_still_ends_training_when_it_comes_first():
    schedule, optimizer, now = _schedule(budget_s=1e6, total=4)
    schedule.start()
    for _ in range(2):
        schedule.advance()
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**0.9)
    schedule.advance(), schedule.advance()
    assert schedule.expired()
    with pytest.raises(ValueError, match="budget must be positive"):
        WallClockPolyLR(optimizer, 0.01, 0.0, 10)


def _fake_site(folder, version):
    for name, value in (("nnunetv2", version), ("dynamic_network_architectures", "0.4.4")):
        meta = folder / f"{name}-{value}.dist-info"
        meta.mkdir(parents=True)
        (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {value}\n")


def test_an_installed_pinned_nnunet_is_used_without_pip_and_a_missing_one_says_how(tmp_path, monkeypatch):
    real_version = install._version
    monkeypatch.setattr(install, "missing_modules", lambda: [])
    monkeypatch.setattr(install, "_version", lambda name, folder=None: None if folder is None else real_version(name, folder))  # not in this env
    monkeypatch.setattr(install, "_pip_install", lambda target: pytest.fail("pip must not run"))
    _fake_site(install.site_folder(tmp_path), install.NNUNET_VERSION)
    assert install.ensure_nnunet(tmp_path, install=False) == install.site_folder(tmp_path).resolve()
    with pytest.raises(MedsegError, match="nnunetv2 2.8.1 is not in .*without --no-install"):
        install.ensure_nnunet(tmp_path / "empty", install=False)


def test_without_the_peers_extra_the_bench_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(install, "missing_modules", lambda: ["acvl_utils", "blosc2"])
    with pytest.raises(MedsegError, match=r"acvl_utils, blosc2.*pip install 'medseg\[peers\]'"):
        install.ensure_nnunet(tmp_path)


def _result():
    row = {"dice": {"Anterior": 0.88, "Posterior": 0.86}, "hd95": {"Anterior": 1.5, "Posterior": 1.25}, "iterations": 9000,
           "s_per_iteration": 0.2, "infer_s_per_case": 0.31}
    machine = {"cpu": "Test CPU", "cores": 2, "memory_gb": 23.5, "gpu": None, "python": "3.11", "packages": {"torch": "2.13", "nnunetv2": "2.8.1"}}
    return {"dataset": "../shared/data/msd_hippocampus", "fold": 0, "minutes": 30.0, "device": "cpu", "date": "2026-12-08",
            "order": "one after the other", "held_out_cases": 37, "machine": machine, "nnunet": {}, "load_average_before": [1.0],
            "rows": [{"tool": "medseg", "tta": False, **row}, {"tool": "nnU-Net", "tta": True, **row, "iterations": 130}]}


def test_the_table_has_dice_and_hd95_per_label_and_the_machine():
    text = render_markdown(_result())
    assert "| tool | TTA | Dice Anterior | Dice Posterior | mean Dice | HD95 Anterior (mm) | HD95 Posterior (mm) | iterations |" in text
    assert "| medseg | off | 0.8800 | 0.8600 | **0.8700** | 1.50 | 1.25 | 9,000 | 0.200 | 0.31 |" in text
    assert "| nnU-Net | on |" in text and "Test CPU, 2 cores" in text and "nnunetv2 2.8.1" in text and "37 held-out cases" in text


def test_the_command_rejects_a_tta_setting_other_than_off_or_on(tmp_path):
    from medseg.cli.bench_cmd import register

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["bench", "peer", "nnunet", str(tmp_path), "--tta", "maybe"])
    assert result.exit_code == 2 and "--tta takes off or on" in result.output
    help_text = CliRunner().invoke(app, ["bench", "peer", "nnunet", "--help"]).output
    assert "msd_hippocampus --minutes 30 --fold 0 -o reports/peer_nnunet_cpu.md" in " ".join(help_text.split())


def _nnunet_ready() -> str | None:
    """Why the end-to-end test cannot run here, or None."""
    missing = install.missing_modules()
    if missing:
        return f"the peers extra is not installed ({', '.join(missing)} missing): {install.INSTALL_COMMAND}"
    try:
        install.ensure_nnunet(install=False)
    except MedsegError as error:
        return f"nnunetv2 {install.NNUNET_VERSION} is not installed: run `medseg bench peer nnunet` once (it installs it), ({error})"
    return None


@pytest.mark.slow
def test_both_tools_end_to_end_on_a_tiny_dataset(synthetic, tmp_path):
    """About a minute of training each, then prediction with and without TTA (10-15 minutes on 2 busy cores)."""
    reason = _nnunet_ready()
    if reason:
        pytest.skip(reason)
    from medseg.bench.peers.nnunet import bench_peer_nnunet

    out = tmp_path / "peer.md"
    result = bench_peer_nnunet(synthetic, out, minutes=1.0, fold=0, install=False, work_dir=tmp_path / "work")
    print(out.read_text())
    rows = {(row["tool"], row["tta"]): row for row in result["rows"]}
    assert set(rows) == {("medseg", False), ("medseg", True), ("nnU-Net", False), ("nnU-Net", True)}
    for row in rows.values():
        assert set(row["dice"]) == {"liver", "tumor"} and all(0.0 <= value <= 1.0 for value in row["dice"].values())
        assert row["iterations"] > 0 and row["s_per_iteration"] > 0 and row["infer_s_per_case"] > 0
    nnunet = result["nnunet"]
    assert nnunet["val_cases"] == result["medseg"]["val_cases"] and len(nnunet["val_cases"]) == result["held_out_cases"]
    assert 55 <= nnunet["train_seconds"] <= 60 + 3 * nnunet["step_s_median"]  # stopped at the budget, not at 1000 epochs
    assert nnunet["imported_but_never_needed"] == [] and result["machine"]["packages"]["nnunetv2"] == install.NNUNET_VERSION
    assert json.loads(out.with_suffix(".json").read_text())["rows"] == result["rows"] and "| nnU-Net | on |" in out.read_text()

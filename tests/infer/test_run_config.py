"""Inference settings follow the run: the model's saved infer: section, then --config, then --set;
archives split into shards; old checkpoints still load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from medseg.infer import Segmenter
from medseg.infer.pipeline import in_shard, parse_shard
from medseg.train.checkpoint import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[2]


class _Result:
    def __init__(self, returncode: int, stderr: str):
        self.returncode, self.stderr = returncode, stderr


def _cli(*args: str, capsys=None) -> _Result:
    """The real `medseg` entry point, in this process (imports are paid once)."""
    from medseg.cli import main

    try:
        main.main(list(args))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return _Result(code, capsys.readouterr().err if capsys else "")


@pytest.fixture(scope="module")
def run_with_settings(trained, tmp_path_factory) -> Path:
    """The fixture model, saved as a run whose training config said infer.overlap=0.25."""
    folder = tmp_path_factory.mktemp("run_settings")
    payload = load_checkpoint(trained["run"] / "checkpoint_best.pt")
    config = dict(payload.config)
    config["infer"] = dict(config["infer"], overlap=0.25, threads=1)
    save_checkpoint(folder / "checkpoint_best.pt", payload.model_copy(update={"config": config}))
    return folder


def test_python_api_uses_the_runs_infer_section(run_with_settings):
    assert Segmenter(run_with_settings).config.overlap == 0.25


def test_cli_uses_the_runs_infer_section_unless_overridden(trained, run_with_settings, tmp_path):
    image = trained["dataset"] / "imagesTs" / "case_004.nii.gz"
    result = _cli("infer", str(run_with_settings), str(image), "-o", str(tmp_path / "a"))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "a" / "case_004.json").read_text())["settings"]["overlap"] == 0.25
    result = _cli("infer", str(run_with_settings), str(image), "-o", str(tmp_path / "b"), "--set", "infer.overlap=0.4")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "b" / "case_004.json").read_text())["settings"]["overlap"] == 0.4
    assert (tmp_path / "b" / "config.yaml").is_file(), "evaluate and report start from the settings infer used"


def test_infer_accepts_any_config_file(trained, tmp_path):
    image = trained["dataset"] / "imagesTs" / "case_005.nii.gz"
    result = _cli("infer", str(trained["run"]), str(image), "-o", str(tmp_path / "out"), "--config", str(REPO / "configs" / "synthetic.yaml"),
                  "--set", "infer.threads=1")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "case_005.nii.gz").is_file()


def test_shards_partition_the_cases_and_skip_existing_resumes(trained, tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    for index in range(4):
        shutil.copy(trained["dataset"] / "imagesTr" / f"case_{index:03d}.nii.gz", cases / f"scan_{index}.nii.gz")
    names = [f"scan_{index}" for index in range(4)]
    assert sorted(sum(([n for n in names if in_shard(n, (k, 2))] for k in (1, 2)), [])) == names  # each case in exactly one shard
    out = tmp_path / "out"
    for k in (1, 2):  # two shard runs over one folder, as two SLURM array tasks would be
        assert _cli("infer", str(trained["run"]), str(cases), "-o", str(out), "--shard", f"{k}/2", "--set", "infer.threads=1").returncode == 0
    summaries = [json.loads((out / f"infer_summary_shard_{k}_of_2.json").read_text()) for k in (1, 2)]
    written = sorted(summaries[0]["written"] + summaries[1]["written"])
    assert written == names, "every case written exactly once across the shards"
    (out / "scan_1.json").unlink()  # as if killed after the mask, before the sidecar
    result = _cli("infer", str(trained["run"]), str(cases), "-o", str(out), "--skip-existing", "--set", "infer.threads=1")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "infer_summary.json").read_text())
    assert summary["written"] == ["scan_1"] and sorted(summary["skipped_existing"]) == ["scan_0", "scan_2", "scan_3"]
    assert not list(out.glob(".*tmp*")), "no temporary files left"


def test_bad_shard_spellings():
    from medseg.errors import ConfigError

    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ("0/4", "5/4", "a/b", "3"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)


def test_format_1_checkpoints_still_load(trained, tmp_path):
    """A checkpoint written by medseg 0.1 (resume state at the top level, plan_configuration) is read into the typed payload."""
    current = load_checkpoint(trained["run"] / "checkpoint_last.pt")
    plan = current.plan.model_dump(mode="json")
    name = current.configuration.name
    plan["plan_version"] = 1
    plan["configurations"] = {"3d": plan["configurations"][name]}
    plan.pop("aliases"), plan.pop("alias_reasons")
    old = {"format_version": 1, "medseg_version": "0.1.0", "model": current.model,
           "model_spec": {"name": "dynunet", "in_channels": 1, "out_channels": 3,
                          "plan_configuration": {k: v for k, v in current.configuration.model_dump().items() if k not in ("name", "target_spacing")}},
           "config": current.config, "plan": plan, "labels": {"0": "background", "1": "liver", "2": "tumor"},
           "normalization": [], "optimizer": current.training.optimizer, "scaler": {}, "scheduler": {"iteration": 5, "elapsed_s": 1.0},
           "epoch": 2, "fold": 0, "best_ema_dice": 0.1, "ema_dice": 0.1, "history": [], "rng": {}, "validation": None}
    torch.save(old, tmp_path / "old.pt")
    payload = load_checkpoint(tmp_path / "old.pt")
    assert payload.training.iteration == 5 and payload.epoch == 2 and payload.configuration.grid_spacing() == current.configuration.grid_spacing()
    assert Segmenter(tmp_path / "old.pt").model.patch_size == current.configuration.patch


@pytest.mark.parametrize(("text", "amp", "compile_"), [("off", "off", "off"), ("bf16", "bf16", "off"), ("auto", "auto", "on")])
def test_set_spellings_of_amp_and_compile(text, amp, compile_):
    """`--set infer.amp=off` is YAML's False: it must mean "off", as `infer.compile=off` does."""
    from medseg.config.loader import parse_overrides
    from medseg.infer import InferConfig

    overrides = parse_overrides([f"infer.amp={text}", f"infer.compile={compile_}"])["infer"]
    config = InferConfig(**overrides)
    assert (config.amp, config.compile) == (amp, compile_)


@pytest.mark.integration
def test_infer_killed_mid_archive_resumes_without_redoing_cases(trained, tmp_path):
    """A real SIGKILL mid-archive: the restart with --skip-existing writes only the missing cases and leaves no temporaries."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cases = tmp_path / "cases"
    cases.mkdir()
    names = [f"scan_{index}" for index in range(5)]
    for index, name in enumerate(names):  # the fixture holds 4 training images: the fifth scan repeats the first
        shutil.copy(trained["dataset"] / "imagesTr" / f"case_{index % 4:03d}.nii.gz", cases / f"{name}.nii.gz")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "medseg.cli.main", "infer", str(trained["run"]), str(cases), "-o", str(out),
               "--set", "infer.threads=1", "--set", "infer.save_probabilities=true"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(out.glob("*.json")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = sorted(p.stem for p in out.glob("scan_*.json"))
    assert 1 <= len(done_before) < len(names), f"kill landed too late to test anything: {done_before}"
    (out / f".{names[-1]}.nii.gz.abc123.tmp.nii.gz").write_bytes(b"half a mask")  # what a kill inside a write leaves
    result = subprocess.run([*command, "--skip-existing"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "infer_summary.json").read_text())
    assert summary["skipped_existing"] == done_before and sorted(summary["written"]) == sorted(set(names) - set(done_before))
    assert sorted(p.stem for p in out.glob("scan_*.json")) == names
    assert not [p.name for p in out.rglob(".*tmp*")], "no temporary files left"


# --- which weights a run folder serves (final by default, best one flag away) --------------------------------------

def _used_checkpoints(out: Path, case: str) -> list[str]:
    return [entry["file"] for entry in json.loads((out / f"{case}.json").read_text())["model"]["checkpoints"]]


def test_run_folder_serves_the_final_weights_unless_best_is_asked(trained, tmp_path, capsys):
    """`medseg infer RUN` loads checkpoint_last.pt (the weights training ended with); --checkpoint best and
    infer.checkpoint=best load checkpoint_best.pt, and the settings written beside the masks say which."""
    import yaml

    from medseg.infer import InferConfig
    from medseg.infer.model import load_model

    run = trained["run"]
    final = load_model(run)
    assert [info.path.name for info in final.checkpoints] == ["checkpoint_last.pt"]
    for name, value in load_checkpoint(run / "checkpoint_last.pt").model.items():
        torch.testing.assert_close(final.networks[0].state_dict()[name], value, rtol=0, atol=0)
    assert [info.path.name for info in load_model(run, "best").checkpoints] == ["checkpoint_best.pt"]
    assert Segmenter(run, InferConfig(threads=1)).model.checkpoints[0].path.name == "checkpoint_last.pt"
    assert Segmenter(run, InferConfig(threads=1, checkpoint="best")).model.checkpoints[0].path.name == "checkpoint_best.pt"

    image = trained["dataset"] / "imagesTs" / "case_004.nii.gz"
    runs = {"default": [], "flag": ["--checkpoint", "best"], "set": ["--set", "infer.checkpoint=best"]}
    for name, extra in runs.items():
        result = _cli("infer", str(run), str(image), "-o", str(tmp_path / name), "--set", "infer.threads=1", *extra, capsys=capsys)
        assert result.returncode == 0, result.stderr
    assert _used_checkpoints(tmp_path / "default", "case_004") == ["checkpoint_last.pt"]
    assert _used_checkpoints(tmp_path / "flag", "case_004") == _used_checkpoints(tmp_path / "set", "case_004") == ["checkpoint_best.pt"]
    assert yaml.safe_load((tmp_path / "flag" / "config.yaml").read_text())["infer"]["checkpoint"] == "best"
    assert yaml.safe_load((tmp_path / "default" / "config.yaml").read_text())["infer"]["checkpoint"] == "final"
    result = _cli("infer", str(run), str(image), "-o", str(tmp_path / "bad"), "--checkpoint", "latest", capsys=capsys)
    assert result.returncode == 2 and "checkpoint" in result.stderr


def test_old_killed_and_partial_run_folders(trained, tmp_path, caplog):
    """A run folder of an older medseg (best + last + summary.json) serves its last checkpoint without a word; one that
    did not finish (no summary.json for that iteration) says so; a folder with one of the two files falls back to it."""
    from medseg.infer.model import load_model, resolve_checkpoints

    old = tmp_path / "old"
    old.mkdir()
    for name in ("checkpoint_best.pt", "checkpoint_last.pt", "summary.json"):
        shutil.copy(trained["run"] / name, old / name)
    with caplog.at_level("WARNING", logger="medseg.infer.model"):
        assert [info.path.name for info in load_model(old).checkpoints] == ["checkpoint_last.pt"]
    assert not caplog.records
    (old / "summary.json").unlink()  # killed before it ended: checkpoint_last.pt is its last save, not its final weights
    with caplog.at_level("WARNING", logger="medseg.infer.model"):
        load_model(old)
    assert "has not finished" in caplog.text and "last save, epoch 2" in caplog.text
    caplog.clear()
    (old / "checkpoint_last.pt").unlink()
    with caplog.at_level("WARNING", logger="medseg.infer.model"):
        assert resolve_checkpoints(old) == [old / "checkpoint_best.pt"]
    assert "no checkpoint_last.pt (the final weights); using checkpoint_best.pt" in caplog.text


def test_cross_validation_run_folder_is_an_ensemble_of_every_folds_final_weights(trained, tmp_path, capsys):
    """`medseg train --fold 0,1` writes RUN/fold_0, RUN/fold_1 (each best + last + summary.json + validation/):
    `medseg infer RUN` averages both folds' final networks."""
    from medseg.infer.model import load_model

    run = tmp_path / "cv"
    for fold in (0, 1):
        folder = run / f"fold_{fold}"
        shutil.copytree(trained["run"], folder, ignore=shutil.ignore_patterns("tensorboard"))
        payload = load_checkpoint(folder / "checkpoint_last.pt")
        generator = torch.Generator().manual_seed(fold)
        weights = {k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v for k, v in payload.model.items()}
        save_checkpoint(folder / "checkpoint_last.pt", payload.model_copy(update={"model": weights, "fold": fold}))
    ensemble = load_model(run)
    assert ensemble.folds == [0, 1] and [info.path for info in ensemble.checkpoints] == [run / "fold_0" / "checkpoint_last.pt",
                                                                                           run / "fold_1" / "checkpoint_last.pt"]
    image = trained["dataset"] / "imagesTs" / "case_005.nii.gz"
    result = _cli("infer", str(run), str(image), "-o", str(tmp_path / "out"), "--set", "infer.threads=1", capsys=capsys)
    assert result.returncode == 0, result.stderr
    sidecar = json.loads((tmp_path / "out" / "case_005.json").read_text())["model"]
    assert sidecar["folds"] == [0, 1] and [entry["file"] for entry in sidecar["checkpoints"]] == ["checkpoint_last.pt"] * 2


def test_final_validation_writes_held_out_predictions_as_infer_would(trained, tmp_path, capsys):
    """The end of training writes RUN/validation/<case>.nii.gz for every held-out case, on the case's raw grid (the synthetic
    cases have mixed orientations and spacings), equal to `medseg infer` of the final checkpoint on the raw image."""
    import nibabel as nib
    import numpy as np

    run = trained["run"]
    held_out = load_checkpoint(run / "checkpoint_last.pt").val_cases
    assert held_out and sorted(path.name for path in (run / "validation").iterdir()) == sorted(f"{case}.nii.gz" for case in held_out)
    assert json.loads((run / "summary.json").read_text())["validation_predictions"] == "validation"
    images = trained["dataset"] / "imagesTr"
    result = _cli("infer", str(run), *[str(images / f"{case}.nii.gz") for case in held_out[:1]], "-o", str(tmp_path / "out"),
                  "--set", "infer.threads=1", capsys=capsys)
    assert result.returncode == 0, result.stderr
    case = held_out[0]
    written, raw, inferred = (nib.load(str(path)) for path in (run / "validation" / f"{case}.nii.gz", images / f"{case}.nii.gz",
                                                                tmp_path / "out" / f"{case}.nii.gz"))
    assert written.shape == raw.shape and np.allclose(written.affine, raw.affine, atol=1e-5)
    agreement = float(np.mean(np.asarray(written.dataobj) == np.asarray(inferred.dataobj)))
    assert agreement > 0.9999, agreement
    assert np.asarray(written.dataobj).max() > 0, "the tiny model finds some foreground"


def test_export_takes_the_same_weights_as_infer(trained, tmp_path):
    """`medseg export onnx RUN` exports the final weights, `--checkpoint best` the best ones, as `medseg infer` chooses them."""
    pytest.importorskip("onnxruntime", reason="the optional onnx extra is not installed (pip install medseg[onnx])")
    from medseg.export.onnx import export_onnx
    from medseg.export.onnx_runtime import load_onnx_model
    from medseg.infer.model import load_model

    run = trained["run"]
    identities = {}
    for choice in ("final", "best"):
        arguments = {} if choice == "final" else {"checkpoint": choice}
        [exported] = export_onnx(run, tmp_path / f"{choice}.onnx", threads=1, **arguments)
        identities[choice] = load_onnx_model(exported.path).model_id()["id"]
        assert identities[choice] == load_model(run, choice).model_id()["id"]
    assert identities["final"] != identities["best"]

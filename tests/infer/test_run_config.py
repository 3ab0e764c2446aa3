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

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medseg.models.config import ModelConfig
from medseg.models.registry import build_model
from medseg.train.checkpoint import load_checkpoint
from medseg.train.trainer import Trainer
from tests.train.conftest import TINY_OVERRIDES, tiny_config

REPO = Path(__file__).resolve().parents[2]


def test_loss_goes_down_and_checkpoint_reloads(tiny_cache, tmp_path):
    config = tiny_config("train.epochs=5", "train.iterations_per_epoch=8")
    trainer = Trainer(config, tiny_cache, tmp_path / "run", progress=False)
    result = trainer.fit()
    rows = trainer.counters.history
    assert result.epochs_done == 5 and result.iterations_done == 40
    assert rows[-1]["train_loss"] < rows[0]["train_loss"], [row["train_loss"] for row in rows]
    for name in ("checkpoint_last.pt", "checkpoint_best.pt", "config.yaml", "environment.json", "training_log.csv", "training_curves.png", "summary.json"):
        assert (tmp_path / "run" / name).is_file(), name
    payload = load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")
    assert payload.labels == {0: "background", 1: "liver", 2: "tumor"}
    assert payload.configuration.grid_spacing() == [3.0, 3.0, 6.0]
    assert payload.training is not None, "the last checkpoint can resume"
    best = load_checkpoint(tmp_path / "run" / "checkpoint_best.pt")
    assert best.training is None and best.validation is not None, "the best checkpoint is inference-only"
    assert (tmp_path / "run" / "checkpoint_best.pt").stat().st_size < 0.7 * (tmp_path / "run" / "checkpoint_last.pt").stat().st_size
    spec = payload.model_spec
    network = build_model(ModelConfig(**payload.config["model"]), spec.in_channels, spec.out_channels, spec.configuration.network_plan())
    network.load_state_dict(payload.model)
    network.eval()
    trainer.step.network.eval()
    sample = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(network(sample), trainer.step.network(sample))


def test_time_budget_stops_cleanly(tiny_cache, tmp_path):
    config = tiny_config("train.epochs=1000", "train.max_minutes=0.05")
    started = time.perf_counter()
    result = Trainer(config, tiny_cache, tmp_path / "run", progress=False).fit()
    assert result.stopped_by_time and result.epochs_done < 1000
    assert time.perf_counter() - started < 60
    assert result.last_validation is not None, "a budget-ended run still validates and saves"
    assert load_checkpoint(tmp_path / "run" / "checkpoint_last.pt").epoch == result.epochs_done


def _train_script(cache: Path, run_dir: Path, extra: list[str]) -> str:
    overrides = TINY_OVERRIDES + extra
    return (
        "import os\n"
        "from medseg.config.loader import load_config\n"
        "from medseg.train.trainer import Trainer\n"
        f"config = load_config(None, {overrides!r})\n"
        f"Trainer(config, {str(cache)!r}, {str(run_dir)!r}, resume={'RESUME' in os.environ!r}, progress=False).fit()\n"
    )


def test_resume_after_sigkill_matches_uninterrupted_run(tiny_cache, tmp_path):
    extra = ["train.epochs=6", "train.iterations_per_epoch=5", "train.val_every=3", "train.checkpoint_every=1"]
    reference = Trainer(tiny_config(*extra), tiny_cache, tmp_path / "reference", progress=False)
    reference.fit()

    killed_dir = tmp_path / "killed"
    script = _train_script(tiny_cache, killed_dir, extra)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    checkpoint = killed_dir / "checkpoint_last.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run must be killed mid-training for this test to mean anything"
    saved = load_checkpoint(checkpoint)
    assert 1 <= saved.epoch < 6
    assert all(value.device.type == "cpu" for value in saved.model.values()), "checkpoints load onto the CPU"

    resumed = Trainer(tiny_config(*extra), tiny_cache, killed_dir, resume=True, progress=False)
    resumed.fit()
    assert resumed.counters.epoch == 6 and [row["epoch"] for row in resumed.counters.history] == list(range(1, 7))
    for name, value in reference.step.network.state_dict().items():
        torch.testing.assert_close(resumed.step.network.state_dict()[name], value, msg=f"{name} differs after resume")


def test_resume_without_checkpoint_is_a_clear_error(tiny_cache, tmp_path):
    from medseg.errors import InputError

    with pytest.raises(InputError, match="no last checkpoint"):
        Trainer(tiny_config(), tiny_cache, tmp_path / "empty", resume=True, progress=False)


def test_two_process_gloo_ddp(tiny_cache, tmp_path):
    run_dir = tmp_path / "ddp"
    script_path = tmp_path / "ddp_train.py"
    script_path.write_text(_train_script(tiny_cache, run_dir, ["train.epochs=2", "train.iterations_per_epoch=3", "train.device=cpu"]))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script_path)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = load_checkpoint(run_dir / "checkpoint_last.pt")
    assert payload.epoch == 2 and payload.training.iteration == 6
    assert not any(key.startswith("module.") for key in payload.model), "DDP wrapper must not leak into saved weights"
    assert sorted(payload.training.rng) == ["0", "1"], "every rank's RNG state is saved, not only rank 0's"
    assert not torch.equal(payload.training.rng["0"]["torch"], payload.training.rng["1"]["torch"])

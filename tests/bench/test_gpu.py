"""`medseg bench gpu` is ready for the first session with a GPU: its dry mode runs every stage on the CPU."""

from __future__ import annotations

import json

import pytest
import torch

from medseg.bench.gpu import STAGES, bench_gpu
from medseg.errors import MedsegError


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_without_cuda_it_stops_with_one_clear_line(tmp_path):
    with pytest.raises(MedsegError, match="needs a CUDA GPU.*--dry-run"):
        bench_gpu(tmp_path / "gpu.json")
    assert not (tmp_path / "gpu.json").exists()


def test_unknown_stage_names_list_the_stages(tmp_path):
    with pytest.raises(MedsegError, match="the stages are tests, resume, resume_compiled, ddp"):
        bench_gpu(tmp_path / "gpu.json", dry_run=True, skip=["warmup"])


def test_dry_run_inference_stage_writes_json_and_markdown(tmp_path):
    result = bench_gpu(tmp_path / "gpu.json", dry_run=True, skip=[s for s in STAGES if s != "inference"], work_dir=tmp_path / "work")
    stage = json.loads((tmp_path / "gpu.json").read_text())["stages"]["inference"]
    assert stage["status"] == "ok", stage
    runs = {(row["model"], row["tta"], row["run"]) for row in stage["rows"]}
    assert len(runs) == 4 and all(row["seconds"] > 0 and "predict" in row["stages_s"] for row in stage["rows"])
    assert "| 3mm_96 | on | warm |" in (tmp_path / "gpu.md").read_text() and result["machine"]["cores"] >= 1


def test_dry_run_of_every_stage(tmp_path, shared_data):
    """The whole bench, tiny and on the CPU (about 45 s): what the first GPU session runs, minus the GPU."""
    result = bench_gpu(tmp_path / "gpu.json", data_dir=shared_data, dry_run=True, work_dir=tmp_path / "work", step_options=True)
    stages = result["stages"]
    assert list(stages) == ["tests", "resume", "resume_compiled", "ddp", "accuracy", "throughput", "inference"]  # accuracy beside the first four
    assert stages["resume_compiled"]["status"] == "skipped" and "CUDA only" in stages["resume_compiled"]["reason"]
    failed = {name: stage for name, stage in stages.items() if stage["status"] not in ("ok", "skipped")}
    assert not failed, failed
    assert stages["resume"]["max_weight_difference"] == 0.0 and stages["ddp"]["ranks_with_rng_state"] == ["0"]
    assert all(row["steps_per_s"] > 0 for row in stages["throughput"]["rows"])
    assert {row["variant"] for row in stages["throughput"]["options"]} >= {"amp off (fp32)", "channels_last_3d", "eager (compile off)"}
    written = json.loads((tmp_path / "gpu.json").read_text())
    assert list(written["stages"]) == list(stages)
    if stages["accuracy"]["status"] == "ok":  # msd_hippocampus present
        assert stages["accuracy"]["iterations"] > 0 and set(stages["accuracy"]["fold0_dice"]) == {"1", "2"}
        assert "| accuracy | ok |" in (tmp_path / "gpu.md").read_text()


def test_a_failing_background_accuracy_run_is_reported_with_its_log(tmp_path):
    from medseg.bench.gpu import BackgroundAccuracy

    missing = tmp_path / "no_such_dataset"
    run = BackgroundAccuracy("cpu", True, tmp_path / "accuracy", missing, 0.05, tmp_path / "shared")
    stage = run.result(timeout_s=300)
    assert stage["status"] == "error" and "exited with code" in stage["error"] and stage["tail"]

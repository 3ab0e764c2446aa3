"""CPU tests for the CUDA code paths that used to crash, or would leave global state or a GPU idle.

Each would have caught a real defect: RNG states moved to the GPU by ``map_location``, CPU tensors
all-reduced over NCCL, a host sync (``.item()``) on every step, and global torch state left behind.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from medseg.runtime import resolve_runtime, runtime_scope
from medseg.train import distributed
from medseg.train.checkpoint import capture_rng_state, restore_rng_state
from medseg.train.step import TrainStep, make_optimizer


def test_rng_state_restores_whatever_device_or_dtype_it_was_loaded_as():
    """``torch.load(map_location=cuda)`` turned the CPU ByteTensor into a CUDA tensor and set_rng_state failed."""
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    state = capture_rng_state(torch.device("cpu"))
    expected = (random.random(), np.random.rand(), torch.rand(3))
    moved = dict(state, torch=state["torch"].to(torch.int64))  # not a uint8 CPU tensor any more
    restore_rng_state(moved)
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1]
    torch.testing.assert_close(got[2], expected[2])


def test_format_1_cuda_rng_lists_are_accepted():
    state = capture_rng_state(torch.device("cpu"))
    restore_rng_state(dict(state, cuda=[torch.zeros(16, dtype=torch.uint8)]))  # no CUDA here: ignored, no crash


def test_collectives_use_the_process_group_device():
    """NCCL refuses CPU tensors: every collective tensor must live on the group's device."""
    context = distributed.DistContext(rank=0, world_size=2, device=torch.device("meta"), joined=True)
    assert distributed.collective_tensor([1.0], context).device.type == "meta"
    assert distributed.DistContext().device.type == "cpu"
    assert distributed.backend_for("cuda") == "nccl" and distributed.backend_for("cpu") == "gloo"


def test_a_training_step_never_syncs_with_the_host(monkeypatch):
    network = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1))
    runtime = resolve_runtime("cpu", "off", 1)
    step = TrainStep(network, network, torch.nn.CrossEntropyLoss(), make_optimizer(network, "sgd", 0.01, 0.9, True, 0.0, fused=False),
                     torch.amp.GradScaler("cuda", enabled=False), runtime, grad_clip=12.0)
    calls = []
    original_item, original_tolist = torch.Tensor.item, torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "item", lambda self: calls.append("item") or original_item(self))
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: calls.append("tolist") or original_tolist(self))
    batch = {"image": torch.randn(2, 1, 8, 8, 8), "label": torch.randint(0, 2, (2, 8, 8, 8), dtype=torch.uint8)}
    for _ in range(5):
        loss = step(batch, 0.01)
    assert calls == [], f"host syncs inside the step: {calls}"
    assert loss.requires_grad is False and loss.device.type == "cpu"
    values = step.losses_since_sync(5)
    assert len(values) == 5 and calls.count("tolist") == 1, "one transfer for all pending losses"


def test_non_finite_loss_is_reported_at_the_next_sync():
    network = torch.nn.Linear(2, 2)
    runtime = resolve_runtime("cpu", "off", 1)
    step = TrainStep(network, network, lambda output, label: output.sum() * float("nan"), make_optimizer(network, "adamw", 0.01, 0.9, True, 0.0, False),
                     torch.amp.GradScaler("cuda", enabled=False), runtime)
    step({"image": torch.randn(1, 2), "label": torch.zeros(1, dtype=torch.uint8)}, 0.01)
    with pytest.raises(FloatingPointError, match="nan"):
        step.losses_since_sync(1)


def test_runtime_scope_restores_threads_cudnn_and_rng():
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    torch.manual_seed(123)
    before = torch.get_rng_state()
    runtime = resolve_runtime("cpu", "off", threads=1).__class__(torch.device("cpu"), None, 1, cudnn_benchmark=not benchmark)
    with runtime_scope(runtime, seed=7):
        assert torch.get_num_threads() == 1 and torch.backends.cudnn.benchmark is (not benchmark)
        torch.rand(10)
    assert torch.get_num_threads() == threads and torch.backends.cudnn.benchmark is benchmark
    assert torch.equal(torch.get_rng_state(), before)


def test_amp_resolution():
    from medseg.errors import ConfigError
    from medseg.runtime import resolve_amp

    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None and resolve_amp("bf16", cpu) == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ConfigError, match="choose one of"):
        resolve_amp("fp8", cpu)


@pytest.mark.parametrize("amx", [True, False])
def test_cpu_training_uses_bf16_only_where_the_cpu_has_amx_and_inference_stays_fp32(monkeypatch, amx):
    import medseg.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: amx)
    cpu = torch.device("cpu")
    assert runtime.resolve_amp("auto", cpu, training=True) == (torch.bfloat16 if amx else None)
    assert runtime.resolve_amp("auto", cpu) is None and runtime.resolve_amp("off", cpu, training=True) is None
    assert runtime.resolve_runtime("cpu", "auto", 1, training=True).autocast_dtype == (torch.bfloat16 if amx else None)


def test_validation_predicts_with_inference_precision_while_training_runs_bf16(monkeypatch, tmp_path, tiny_cache):
    """The reported full-volume Dice must be `medseg infer`'s: fp32 on a CPU even when training steps run in bf16."""
    import medseg.runtime as runtime
    import medseg.train.trainer as trainer_module
    from tests.train.conftest import tiny_config

    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: True)
    seen = []
    real = trainer_module.validate_volumes
    monkeypatch.setattr(trainer_module, "validate_volumes", lambda network, cases, targets, spec, used, *a, **k: seen.append(used) or real(network, cases, targets, spec, used, *a, **k))
    trainer = trainer_module.Trainer(tiny_config("train.epochs=1", "train.iterations_per_epoch=2", "train.amp=auto"), tiny_cache, tmp_path / "run", progress=False)
    trainer.fit()
    assert trainer.runtime.autocast_dtype == torch.bfloat16
    assert seen and all(used.autocast_dtype is None for used in seen)


def test_plain_cuda_resolves_to_the_ranks_indexed_gpu(monkeypatch):
    """On the first H200 run `train.device=cuda` reached torch.cuda.set_device without an index and every CUDA
    path crashed ("Expected a torch.device with a specified index"); set_device is checked the way torch checks it."""
    from torch._utils import _get_device_index

    from medseg.runtime import Runtime, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda", 3)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:2", local_rank=1) == torch.device("cuda", 2)  # an explicit index is kept
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # CUDA_VISIBLE_DEVICES gives each rank its one GPU
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: chosen.append(_get_device_index(device)))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    with runtime_scope(Runtime(resolve_device("cuda", local_rank=1), None, 1)):
        pass
    assert chosen == [1, 0]  # this rank's GPU inside, the caller's after


class _FailsToCompile(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("inductor: no working C++ compiler")


def _step_with(model: torch.nn.Module, network: torch.nn.Module, eager: torch.nn.Module | None) -> TrainStep:
    return TrainStep(model, network, torch.nn.CrossEntropyLoss(), make_optimizer(network, "sgd", 0.01, 0.9, True, 0.0, fused=False),
                     torch.amp.GradScaler("cuda", enabled=False), resolve_runtime("cpu", "off", 1), eager_model=eager)


def test_a_compiled_model_that_fails_to_compile_trains_eagerly(caplog):
    torch.manual_seed(0)
    network = torch.nn.Conv3d(1, 2, 3, padding=1)
    step = _step_with(_FailsToCompile(), network, eager=network)
    batch = {"image": torch.randn(2, 1, 6, 6, 6), "label": torch.randint(0, 2, (2, 6, 6, 6), dtype=torch.uint8)}
    before = network.weight.detach().clone()
    with caplog.at_level("WARNING"):
        loss = step(batch, 0.01)
    assert torch.isfinite(loss) and "training continues without compiling" in caplog.text
    assert step.model is network and not torch.equal(before, network.weight)  # the step was redone and applied
    step(batch, 0.01)  # later steps run eagerly without trying again
    assert step.model is network


def test_an_eager_failure_is_not_hidden_by_the_fallback():
    network = torch.nn.Conv3d(1, 2, 3, padding=1)
    step = _step_with(_FailsToCompile(), network, eager=_FailsToCompile())
    batch = {"image": torch.randn(1, 1, 4, 4, 4), "label": torch.zeros((1, 4, 4, 4), dtype=torch.uint8)}
    with pytest.raises(RuntimeError, match="no working C\\+\\+ compiler"):
        step(batch, 0.01)


def test_training_compiles_by_default_on_cuda_only():
    from medseg.config.loader import load_config

    assert load_config(None, []).train.compile == "auto"
    assert load_config(None, ["train.compile=true"]).train.compile == "on"
    assert load_config(None, ["train.compile=off"]).train.compile == "off"
    assert load_config(None, ["train.amp=off"]).train.amp == "off"


def test_a_resume_on_a_machine_that_resolves_another_precision_says_so(monkeypatch, tmp_path, tiny_cache, caplog):
    import json
    import logging

    import medseg.runtime as runtime
    from medseg.train.trainer import Trainer
    from tests.train.conftest import tiny_config

    overrides = ("train.epochs=1", "train.iterations_per_epoch=2", "train.val_every=5")
    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: True)
    Trainer(tiny_config(*overrides), tiny_cache, tmp_path / "run", progress=False).fit()
    assert json.loads((tmp_path / "run" / "environment.json").read_text())["training_precision"] == "bfloat16"
    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: False)
    with caplog.at_level(logging.WARNING, logger="medseg.train.trainer"):
        Trainer(tiny_config(*overrides[1:], "train.epochs=2"), tiny_cache, tmp_path / "run", resume=True, progress=False).fit()
    assert any("resumed with fp32 training steps where the run started with bfloat16" in record.message for record in caplog.records)
    assert json.loads((tmp_path / "run" / "environment.json").read_text())["training_precision"] == "fp32"

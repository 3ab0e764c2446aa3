"""Fine-tuning (`train.init_from`, `medseg train --init-from`) and encoder freezing (`train.freeze_encoder_epochs`).

All on the tiny seeded synthetic cache of conftest.py (4 cases, 32x32x16 patch, 4-16 features): one source run
is trained once per module and every test starts from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.errors import ConfigError, InputError
from medseg.models import available_models
from medseg.models.config import ModelConfig
from medseg.models.encoder import _first_upsampling, encoder_parameters
from medseg.models.registry import build_model
from medseg.train.checkpoint import load_checkpoint, save_checkpoint
from medseg.train.init_from import output_head_names, resolve_init_checkpoint, strip_wrapper_prefixes
from medseg.train.trainer import Trainer
from tests.train.conftest import TINY_OVERRIDES, tiny_config

CPU = "train.device=cpu"  # the same results on a machine with a GPU; the gpu-marked tests at the end run there
FAST = ["train.epochs=1", "train.iterations_per_epoch=2", CPU]


@pytest.fixture(scope="module")
def source_run(tiny_cache, tmp_path_factory) -> Path:
    """A trained 3-class (background, liver, tumor) dynunet run folder."""
    run = tmp_path_factory.mktemp("source") / "run"
    Trainer(tiny_config(*FAST, "train.seed=5"), tiny_cache, run, progress=False).fit()
    return run


@pytest.fixture(scope="module")
def two_class_cache(tiny_cache, tmp_path_factory) -> Path:
    """The same synthetic images with tumour merged into the organ: labels background, organ (one class fewer)."""
    from medseg.data.synthetic import make_synthetic_dataset
    from medseg.train.api import prepare_cache

    root = tmp_path_factory.mktemp("two_class")
    dataset = make_synthetic_dataset(root / "dataset", cases=4, seed=3, fov_mm=(120, 120, 72))
    for path in (dataset / "labelsTr").glob("*.nii.gz"):
        image = nib.load(str(path))
        labels = np.asarray(image.dataobj)
        nib.save(nib.Nifti1Image(np.minimum(labels, 1).astype(labels.dtype), image.affine, image.header), str(path))
    description = json.loads((dataset / "dataset.json").read_text())
    description.update(name="SyntheticOrgan", labels={"0": "background", "1": "organ"})
    (dataset / "dataset.json").write_text(json.dumps(description))
    return prepare_cache(dataset, tiny_config(f"work_dir={root / 'work'}"), progress=False)


def _initialised(cache: Path, run_dir: Path, *extra: str) -> Trainer:
    """A trainer whose network is built and initialised (from init_from when set), not trained."""
    trainer = Trainer(tiny_config(*FAST, *extra), cache, run_dir, progress=False)
    with trainer.session:
        if trainer.init_source is not None:
            trainer._init_from()
    return trainer


def test_matching_weights_load_exactly(tiny_cache, source_run, tmp_path):
    trainer = _initialised(tiny_cache, tmp_path / "ft", f"train.init_from={source_run / 'checkpoint_last.pt'}")
    source = load_checkpoint(source_run / "checkpoint_last.pt").model
    state = trainer.step.network.state_dict()
    assert state.keys() == source.keys()
    for name, value in source.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0, msg=name)
    report = trainer.transfer
    assert report.loaded_fraction == 1.0 and not (report.skipped or report.missing or report.unexpected or report.output_heads)
    assert report.chosen == "the checkpoint file given" and report.architecture == "dynunet"
    assert len(report.loaded) == report.tensors < len(state), "DynUNet's aliased blocks are counted once"


def test_new_output_heads_when_the_class_count_changes(two_class_cache, source_run, tmp_path):
    scratch = _initialised(two_class_cache, tmp_path / "scratch").step.network.state_dict()
    trainer = _initialised(two_class_cache, tmp_path / "ft", f"train.init_from={source_run}")
    state, source = trainer.step.network.state_dict(), load_checkpoint(source_run / "checkpoint_last.pt").model
    heads = output_head_names(ModelConfig(**trainer.config.model.model_dump()), trainer.model_spec)
    assert heads and all(name.startswith(("output_block.", "deep_supervision_heads.", "skip_layers.")) for name in heads)
    for name, value in state.items():
        expected = scratch[name] if name in heads else source[name]  # heads: the seeded fresh init; the rest: the source
        torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=name)
    report = trainer.transfer
    assert report.chosen == "final checkpoint" and report.checkpoint.endswith("checkpoint_last.pt"), "a run folder gives its final weights"
    assert report.output_heads.outputs == 2 and report.output_heads.names == ["background", "organ"]
    assert "new output heads for 2 classes (background, organ): the checkpoint's are for 3 (background, liver, tumor)" in report.headline()
    assert all(mismatch.checkpoint_shape[0] == 3 and mismatch.network_shape[0] == 2 for mismatch in report.output_heads.tensors)
    assert not report.skipped and not report.missing and report.loaded_fraction > 0.9


def test_same_class_count_with_other_labels_gets_new_heads(tiny_cache, source_run, tmp_path):
    payload = load_checkpoint(source_run / "checkpoint_best.pt")
    renamed = payload.plan.model_copy(update={"labels": {0: "background", 1: "kidney", 2: "cyst"}})
    path = save_checkpoint(tmp_path / "renamed.pt", payload.model_copy(update={"plan": renamed}))
    report = _initialised(tiny_cache, tmp_path / "ft", f"train.init_from={path}").transfer
    assert report.output_heads is not None and "other labels (background, kidney, cyst)" in report.output_heads.reason
    assert all(mismatch.checkpoint_shape == mismatch.network_shape for mismatch in report.output_heads.tensors)


def test_ddp_and_compile_prefixes_are_stripped(tiny_cache, source_run, tmp_path):
    payload = load_checkpoint(source_run / "checkpoint_best.pt")
    wrapped = {f"module._orig_mod.{name}": value for name, value in payload.model.items()}
    path = save_checkpoint(tmp_path / "wrapped.pt", payload.model_copy(update={"model": wrapped}))
    assert _initialised(tiny_cache, tmp_path / "ft", f"train.init_from={path}").transfer.loaded_fraction == 1.0
    assert strip_wrapper_prefixes({"_orig_mod.module.a.b": 1, "_orig_mod.module.c": 2}) == {"a.b": 1, "c": 2}
    assert strip_wrapper_prefixes({"module.a": 1, "b": 2}) == {"module.a": 1, "b": 2}, "a prefix only some names have is a real module name"
    assert strip_wrapper_prefixes({"encoder._orig_mod.conv.weight": 1}) == {"encoder.conv.weight": 1}


def test_another_architecture_is_a_one_line_config_error(tiny_cache, source_run, tmp_path):
    trainer = Trainer(tiny_config(*FAST, "model.name=unet", f"train.init_from={source_run}"), tiny_cache, tmp_path / "ft", progress=False)
    with pytest.raises(ConfigError) as caught:
        trainer.fit()
    message = str(caught.value)
    assert message.startswith(f"{source_run / 'checkpoint_last.pt'}: --init-from: the checkpoint holds a dynunet network but this run builds unet")
    assert "--set model.name=dynunet --set model.base_features=4 --set model.max_features=16" in message and "\n" not in message


def test_too_little_in_common_says_what_differs_and_how_to_fix_it(tiny_cache, source_run, tmp_path):
    trainer = Trainer(tiny_config(*FAST, "model.base_features=8", "model.max_features=32", f"train.init_from={source_run}"),
                      tiny_cache, tmp_path / "ft", progress=False)
    with pytest.raises(ConfigError) as caught:
        trainer.fit()
    message = str(caught.value)
    assert "match the checkpoint by name and shape, under the 50% needed" in message
    assert "widths [4, 8, 16, 16] vs [8, 16, 32, 32]" in message
    assert "--set model.base_features=4 --set model.max_features=16" in message and "\n" not in message


def test_another_depth_is_refused_even_when_shapes_match(tiny_cache, source_run, tmp_path):
    """dynunet names decoder levels from the bottleneck up: at another depth same-shaped tensors land at other levels."""
    trainer = Trainer(tiny_config(*FAST, "model.max_pooling_steps=2", f"train.init_from={source_run}"), tiny_cache, tmp_path / "ft", progress=False)
    with pytest.raises(ConfigError) as caught:
        trainer.fit()
    message = str(caught.value)
    assert "the checkpoint's network has 4 stages and this run's 3" in message and "depth 4 vs 3 stages" in message
    assert "--set model.max_pooling_steps=null" in message


def test_stage_differences_name_the_patch_and_spacing(source_run):
    from medseg.train.init_from import NetworkShape, describe_differences

    spec = load_checkpoint(source_run / "checkpoint_best.pt").model_spec
    model = ModelConfig(base_features=4, max_features=16)
    bigger = spec.model_copy(update={"configuration": spec.configuration.with_overrides(patch_size=[64, 64, 32]).model_copy(
        update={"target_spacing": [1.5, 1.5, 3.0]}), "in_channels": 2})
    differences, fixes = describe_differences(NetworkShape.of(spec, model), NetworkShape.of(bigger, model))
    assert differences[0] == "in-channels 1 vs 2 (the data's modalities; the first convolution stays new)"
    assert differences[1].startswith("depth 4 vs 5 stages") and "patch [32, 32, 16] at [3.0, 3.0, 6.0] mm vs [64, 64, 32]" in differences[1]
    assert fixes == ["--set train.patch_size=[32,32,16]", "--set plan.target_spacing=[3.0,3.0,6.0]", "--set model.max_pooling_steps=3"]


def test_run_folder_resolution(tmp_path):
    run = tmp_path / "runs" / "Synthetic" / "3d_lowres"
    for fold, names in {"fold_1": ["checkpoint_best.pt", "checkpoint_last.pt"], "fold_0": ["checkpoint_best.pt"]}.items():
        for name in names:
            (run / fold).mkdir(parents=True, exist_ok=True)
            (run / fold / name).write_bytes(b"")
    path, why = resolve_init_checkpoint(run)
    assert path == run / "fold_0" / "checkpoint_best.pt" and why.startswith("best validation checkpoint (no final one) of fold_0, the lowest fold")
    (run / "fold_all").mkdir()
    (run / "fold_all" / "checkpoint_last.pt").write_bytes(b"")
    path, why = resolve_init_checkpoint(run)
    assert path == run / "fold_all" / "checkpoint_last.pt" and "trained on every case; 2 other fold(s) not used" in why
    assert resolve_init_checkpoint(run / "fold_1") == (run / "fold_1" / "checkpoint_last.pt", "final checkpoint")
    assert resolve_init_checkpoint(run / "fold_1" / "checkpoint_best.pt") == (run / "fold_1" / "checkpoint_best.pt", "the checkpoint file given")
    with pytest.raises(InputError, match="pass one of those"):  # runs/<dataset> holds configuration folders: say which
        resolve_init_checkpoint(run.parent)
    with pytest.raises(InputError, match="does not exist"):
        resolve_init_checkpoint(tmp_path / "nowhere")


def test_encoder_of_every_registered_model():
    plan = {"patch_size": [32, 32, 16], "spacing": [1.0, 1.0, 2.0]}
    for name, modules in {"dynunet": ("input_block", "downsamples", "bottleneck"), "segresnet": ("encoder",)}.items():
        network = build_model(ModelConfig(name=name, base_features=4, max_features=16), 1, 3, plan)
        declared = [n for n, _ in encoder_parameters(network, name)]
        assert declared and all(n.split(".")[0] in modules for n in declared)
        names = [n for n, _ in network.named_parameters()]
        first = _first_upsampling(network)
        general = names[: next(i for i, n in enumerate(names) if n.startswith(first + "."))]
        assert general == declared, f"{name}: the general rule and the registered encoder agree"
    unet = build_model(ModelConfig(name="unet", base_features=4, max_features=16), 1, 3, plan)
    chosen = [n for n, _ in encoder_parameters(unet, "unet")]
    assert 0 < len(chosen) < len(list(unet.parameters())) and chosen[0].startswith("model.0.")
    assert not any(".2." in n.removeprefix("model.1") or n.startswith("model.2.") for n in chosen), "no up layer in the unet encoder"


@pytest.mark.parametrize("name", sorted(available_models()))
def test_every_registered_model_has_an_encoder_without_its_output_heads(name):
    plan = {"patch_size": [32, 32, 16], "spacing": [1.0, 1.0, 2.0]}
    network = build_model(ModelConfig(name=name, base_features=4, max_features=16), 1, 3, plan)
    chosen = encoder_parameters(network, name)
    assert 0 < len(chosen) < len(list(network.parameters()))
    heads = [n for n, parameter in chosen if parameter.dim() > 1 and parameter.shape[0] == 3]  # 3 classes; widths are 4, 8, 16
    assert not heads, f"{name}: the encoder holds output-head weights {heads}"


def test_freshly_initialised_encoder_tensors_are_not_frozen():
    """A first convolution left random by --init-from (other input channels) trains from the start."""
    from medseg.train.freeze import EncoderFreeze
    from medseg.train.init_from import fresh_tensor_names

    network = build_model(ModelConfig(base_features=4, max_features=16), 2, 3, {"patch_size": [32, 32, 16], "spacing": [1.0, 1.0, 2.0]})
    full = EncoderFreeze.build(network, "dynunet", 2)
    first = full.names[0]
    record = {"skipped": [{"name": first, "checkpoint_shape": [4, 1, 3, 3, 3], "network_shape": [4, 2, 3, 3, 3]}], "missing": [], "output_heads": None}
    partial = EncoderFreeze.build(network, "dynunet", 2, fresh_tensor_names(record))
    assert partial.names == full.names[1:]
    partial.update(0)
    assert dict(network.named_parameters())[first].requires_grad and not any(p.requires_grad for p in partial.parameters)


def test_primed_momentum_is_exactly_sgds_first_step():
    """Unfrozen parameters get zero momentum buffers (fused SGD refuses a partly filled list): the same update as SGD's own start."""
    from medseg.train.freeze import prime_momentum

    torch.manual_seed(0)
    grads = [torch.randn(4, 3) for _ in range(3)]
    results = []
    for primed in (False, True):
        weight, late = torch.nn.Parameter(torch.ones(4, 3)), torch.nn.Parameter(torch.ones(4, 3))
        optimizer = torch.optim.SGD([weight, late], lr=0.1, momentum=0.99, nesterov=True, weight_decay=3e-5)
        weight.grad = grads[0]
        optimizer.step()  # `late` frozen: no gradient, no state
        assert late not in optimizer.state or not optimizer.state[late]
        if primed:
            assert prime_momentum(optimizer, [late]) == 1 and prime_momentum(optimizer, [late]) == 0
        for grad in grads[1:]:
            weight.grad, late.grad = grad, grad * 2
            optimizer.step()
        results.append(late.detach().clone())
    assert torch.equal(results[0], results[1])


class _Stop(Exception):
    pass


class _Recording(Trainer):
    """Records, after every epoch, whether it ran frozen and the encoder's weights; can stop before epoch ``stop_at + 1``."""

    stop_at: int | None = None

    def _epoch(self, *args, **kwargs):
        if self.stop_at is not None and self.counters.epoch >= self.stop_at:
            raise _Stop
        result = super()._epoch(*args, **kwargs)
        encoder = {name: parameter.detach().clone() for name, parameter in zip(self.freeze.names, self.freeze.parameters)}
        untouched = all(id(parameter) not in {id(p) for p in self.step.optimizer.state} for parameter in self.freeze.parameters)
        self.record = getattr(self, "record", []) + [(self.counters.epoch, self.freeze.frozen, encoder, untouched)]
        return result


def _killed_and_resumed(extra: list[str], cache: Path, run: Path, stop_at: int) -> _Recording:
    """A run stopped after epoch ``stop_at`` (its checkpoint written), then resumed to the end."""
    interrupted = _Recording(tiny_config(*extra), cache, run, progress=False)
    interrupted.stop_at = stop_at
    with pytest.raises(_Stop):
        interrupted.fit()
    resumed = _Recording(tiny_config(*extra), cache, run, resume=True, progress=False)
    resumed.fit()
    return resumed


def _assert_same_weights(reference: Trainer, resumed: Trainer) -> None:
    for name, value in reference.step.network.state_dict().items():
        torch.testing.assert_close(resumed.step.network.state_dict()[name], value, rtol=0, atol=0, msg=f"{name} differs after resume")


def test_freeze_then_unfreeze_exactly_at_epoch_n_also_after_resume(tiny_cache, source_run, tmp_path):
    extra = ["train.epochs=4", "train.iterations_per_epoch=3", "train.val_every=4", "train.checkpoint_every=1", CPU,
             "train.freeze_encoder_epochs=2", f"train.init_from={source_run}"]  # SGD, momentum 0.99, weight decay 3e-5
    reference = _Recording(tiny_config(*extra), tiny_cache, tmp_path / "reference", progress=False)
    reference.fit()
    start = load_checkpoint(source_run / "checkpoint_last.pt").model
    assert [(epoch, frozen) for epoch, frozen, _, _ in reference.record] == [(1, True), (2, True), (3, False), (4, False)]
    for epoch, frozen, encoder, untouched in reference.record:
        same = all(torch.equal(value, start[name]) for name, value in encoder.items())
        assert same == frozen, f"epoch {epoch}: the encoder changes exactly when it is not frozen"
        assert untouched == frozen, f"epoch {epoch}: the optimizer keeps no state (momentum, decay) for frozen parameters"
    rows = reference.counters.history
    assert [row["encoder_frozen"] for row in rows] == [1, 1, 0, 0]
    assert json.loads((tmp_path / "reference" / "summary.json").read_text())["freeze_encoder_epochs"] == 2

    resumed = _killed_and_resumed(extra, tiny_cache, tmp_path / "killed", stop_at=1)
    assert resumed.transfer is None, "--resume wins: the checkpoint already holds the fine-tuned weights"
    assert [(epoch, frozen) for epoch, frozen, _, _ in resumed.record] == [(2, True), (3, False), (4, False)]
    _assert_same_weights(reference, resumed)
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["init_from"]["loaded_fraction"] == 1.0, "the report written at the start survives --resume"


def test_a_resume_at_the_unfreeze_epoch_runs_fused_sgd_and_matches(tiny_cache, source_run, tmp_path):
    """Killed right after the last frozen epoch: the restored optimizer has no encoder momentum, which fused SGD refuses."""
    extra = ["train.epochs=3", "train.iterations_per_epoch=3", "train.val_every=4", "train.checkpoint_every=1", CPU,
             "train.fused_optimizer=on", "train.freeze_encoder_epochs=2", f"train.init_from={source_run}"]
    reference = _Recording(tiny_config(*extra), tiny_cache, tmp_path / "reference", progress=False)
    reference.fit()
    resumed = _killed_and_resumed(extra, tiny_cache, tmp_path / "killed", stop_at=2)
    assert [(epoch, frozen) for epoch, frozen, _, _ in resumed.record] == [(3, False)]
    _assert_same_weights(reference, resumed)


def _cli(capsys, *args) -> tuple[int, str]:
    from medseg.cli.main import main

    try:
        main([str(arg) for arg in args])
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0
    captured = capsys.readouterr()
    return code, captured.err


def test_cli_init_from_end_to_end(tmp_path, capsys):
    code, err = _cli(capsys, "data", "synth", tmp_path / "ds", "--cases", "4", "--seed", "3", "--set", "synth.fov_mm=[120,120,72]")
    assert code == 0, err
    settings = [value for override in TINY_OVERRIDES + FAST + [f"work_dir={tmp_path / 'work'}"] for value in ("--set", override)]
    code, err = _cli(capsys, "train", tmp_path / "ds", *settings, "-o", tmp_path / "source")
    assert code == 0, err
    code, err = _cli(capsys, "train", tmp_path / "ds", *settings, "--set", "train.freeze_encoder_epochs=1", "-o", tmp_path / "tuned",
                     "--init-from", tmp_path / "source")
    assert code == 0, err
    summary = json.loads((tmp_path / "tuned" / "fold_0" / "summary.json").read_text())
    report = summary["init_from"]
    assert report["checkpoint"] == str(tmp_path / "source" / "fold_0" / "checkpoint_last.pt")
    assert report["loaded_fraction"] == 1.0 and report["output_heads"] is None and report["summary"].startswith("init from ")
    assert json.loads((tmp_path / "tuned" / "fold_0" / "init_from.json").read_text()) == report
    saved = (tmp_path / "tuned" / "fold_0" / "config.yaml").read_text()
    assert f"init_from: {tmp_path / 'source'}" in saved and "freeze_encoder_epochs: 1" in saved

    code, err = _cli(capsys, "train", tmp_path / "ds", *settings, "--set", "model.name=unet", "-o", tmp_path / "unet",
                     "--init-from", tmp_path / "source" / "fold_0" / "checkpoint_last.pt")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: {tmp_path / 'source' / 'fold_0' / 'checkpoint_last.pt'}: --init-from: the checkpoint holds a dynunet")

    # --resume wins: the init source is not even looked for (this one does not exist), the run goes on from its checkpoint
    code, err = _cli(capsys, "train", tmp_path / "ds", *settings, "--set", "train.epochs=2", "-o", tmp_path / "tuned", "--resume",
                     "--init-from", tmp_path / "source" / "nowhere.pt")
    assert code == 0, err
    assert load_checkpoint(tmp_path / "tuned" / "fold_0" / "checkpoint_last.pt").epoch == 2



_DDP_SCRIPT = """
import shutil, sys, torch
from medseg.config.loader import load_config
from medseg.train.trainer import Trainer

class Saving(Trainer):
    def _save_last(self, validation):
        super()._save_last(validation)
        if self.dist.is_main:
            shutil.copy(self.run_dir / "checkpoint_last.pt", self.run_dir / f"epoch_{self.counters.epoch}.pt")

cache, run_dir, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
trainer = Saving(load_config(None, overrides), cache, run_dir, progress=False)
trainer.fit()
assert trainer.dist.enabled
torch.save(trainer.step.network.state_dict(), f"{run_dir}/rank_{trainer.dist.rank}.pt")
"""


def _ddp_freeze_run(cache: Path, source_run: Path, tmp_path: Path, processes: int, *extra: str, env: dict | None = None) -> None:
    """torchrun a 2-epoch fine-tuning with the encoder frozen in epoch 1; check the weights after each epoch and across ranks."""
    import os
    import subprocess
    import sys

    script, run = tmp_path / "ddp_freeze.py", tmp_path / "ddp"
    script.write_text(_DDP_SCRIPT)
    overrides = TINY_OVERRIDES + ["train.epochs=2", "train.iterations_per_epoch=3", "train.val_every=2", "train.checkpoint_every=1",
                                  "train.freeze_encoder_epochs=1", f"train.init_from={source_run}", *extra]
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", str(script),
                             str(cache), str(run), *overrides], cwd=repo, capture_output=True, text=True, timeout=420,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
                                 "OMP_NUM_THREADS": "1", **(env or {})})
    assert result.returncode == 0, result.stderr[-3000:]
    start = load_checkpoint(source_run / "checkpoint_last.pt").model
    after = [load_checkpoint(run / f"epoch_{epoch}.pt").model for epoch in (1, 2)]
    encoder = [name for name in start if name.startswith(("input_block.", "downsamples.", "bottleneck."))]
    assert all(torch.equal(after[0][name], start[name]) for name in encoder), "epoch 1: encoder frozen on every rank"
    assert not torch.equal(after[0]["output_block.conv.conv.weight"], start["output_block.conv.conv.weight"]), "the decoder trains"
    assert not all(torch.equal(after[1][name], start[name]) for name in encoder), "epoch 2: encoder trains"
    ranks = [torch.load(run / f"rank_{rank}.pt", weights_only=True, map_location="cpu") for rank in range(processes)]
    for name, value in ranks[0].items():
        assert all(torch.equal(other[name], value) for other in ranks[1:]), f"{name}: the ranks' replicas drifted apart"


def test_freeze_under_ddp_wraps_again_and_ranks_agree(tiny_cache, source_run, tmp_path):
    """DDP registers the parameters that need a gradient when it is built: freezing and unfreezing wrap the network again,
    so frozen parameters get no (missing) gradient and unfrozen ones are averaged over the ranks again."""
    _ddp_freeze_run(tiny_cache, source_run, tmp_path, 2, CPU)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_init_from_and_freeze_on_cuda_compiled(tiny_cache, source_run, tmp_path):
    """torch.compile guards on requires_grad: unfreezing recompiles, and the frozen epoch leaves the encoder bit-exact."""
    trainer = _Recording(tiny_config("train.epochs=2", "train.iterations_per_epoch=3", "train.val_every=2", "train.device=cuda",
                                     "train.compile=on", "train.freeze_encoder_epochs=1", f"train.init_from={source_run}"),
                         tiny_cache, tmp_path / "cuda", progress=False)
    trainer.fit()
    assert trainer.transfer.loaded_fraction == 1.0 and trainer.runtime.cuda
    assert isinstance(trainer.step.model, torch._dynamo.eval_frame.OptimizedModule), "compiled throughout: no eager fallback"
    start = load_checkpoint(source_run / "checkpoint_last.pt").model
    (_, frozen, encoder, untouched), (_, later, trained, _) = trainer.record
    assert frozen and untouched and all(torch.equal(value.cpu(), start[name]) for name, value in encoder.items())
    assert not later and not all(torch.equal(value.cpu(), start[name]) for name, value in trained.items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_freeze_under_nccl_ddp_compiled(tiny_cache, source_run, tmp_path):
    """compile(DDP(network)) on NCCL, wrapped again at freeze and unfreeze (a world of one: one GPU is enough)."""
    _ddp_freeze_run(tiny_cache, source_run, tmp_path, 1, "train.device=cuda", "train.compile=on", env={"MEDSEG_FORCE_DDP": "1"})

"""`medseg export onnx`: dynamic axes, metadata that inference needs, verification against PyTorch,
one-line errors, and a loader whose LoadedModel stands in for the PyTorch one."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the optional onnx extra is not installed (pip install medseg[onnx])")

from medseg.errors import ConfigError, InputError, MedsegError  # noqa: E402
from medseg.export import onnx_metadata  # noqa: E402
from medseg.export.onnx import export_onnx, output_paths  # noqa: E402
from medseg.export.onnx_runtime import OnnxNetwork, load_onnx_model  # noqa: E402
from medseg.bench.infer import build_benchmark_checkpoint  # noqa: E402
from medseg.infer.model import load_model  # noqa: E402

PATCH = (32, 32, 16)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx_export")
    return build_benchmark_checkpoint(folder / "model.pt", classes=3, base_features=8, max_features=32, patch=PATCH, spacing=(2.0, 2.0, 3.0))


@pytest.fixture(scope="module")
def exported(checkpoint):
    [network] = export_onnx(checkpoint, checkpoint.with_name("model.onnx"), threads=1)
    return network


def test_export_carries_what_inference_needs(checkpoint, exported):
    torch_model, onnx_model = load_model(checkpoint), load_onnx_model(exported.path)
    assert onnx_model.plan == torch_model.plan and onnx_model.labels == torch_model.labels
    assert onnx_model.patch_size == torch_model.patch_size and onnx_model.in_channels == 1
    assert onnx_model.model_id()["id"] == torch_model.model_id()["id"]
    metadata = onnx_model.networks[0].metadata
    assert metadata.normalization == torch_model.plan.model_dump(mode="json")["preprocessing"]["normalization"]
    assert metadata.verification["max_abs_logit_diff"] == exported.max_abs_diff < 1e-3
    # Readable without medseg: one JSON entry in the ONNX metadata.
    raw = json.loads(onnx_model.networks[0].session.get_modelmeta().custom_metadata_map["medseg"])
    assert raw["normalization"][0]["scheme"] == "ct" and raw["patch_size"] == list(PATCH)


@pytest.mark.parametrize("shape", [(1, 1, *PATCH), (3, 1, 48, 16, 32)])
def test_onnx_network_matches_pytorch_on_any_batch_and_window(checkpoint, exported, shape):
    network = load_model(checkpoint).networks[0]
    window = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        expected = network(window)
    actual = OnnxNetwork(exported.path)(window)
    assert isinstance(actual, torch.Tensor) and actual.shape == expected.shape
    assert float((actual - expected).abs().max()) < 1e-3
    assert torch.equal(actual.argmax(1), expected.argmax(1))


def test_onnx_network_refuses_cuda(exported):
    network = OnnxNetwork(exported.path)
    assert network.to(torch.device("cpu")) is network
    with pytest.raises(ConfigError, match="runs on the CPU"):
        network.to("cuda")


def test_disagreeing_graph_is_refused_and_nothing_is_written(checkpoint, tmp_path):
    out = tmp_path / "refused.onnx"
    with pytest.raises(MedsegError, match="differ from PyTorch's"):
        export_onnx(checkpoint, out, tolerance=-1.0, threads=1)  # any difference is too much
    assert list(tmp_path.iterdir()) == []
    [forced] = export_onnx(checkpoint, out, tolerance=-1.0, allow_mismatch=True, threads=1)
    assert forced.path.is_file()


def test_folds_go_to_one_file_each_in_a_folder(checkpoint, tmp_path):
    model = load_model(checkpoint)
    assert output_paths(model, tmp_path / "x.onnx") == [tmp_path / "x.onnx"]
    model.networks, model.checkpoints = model.networks * 2, [model.checkpoints[0], model.checkpoints[0]]
    model.checkpoints = [type(model.checkpoints[0])(**{**vars(model.checkpoints[0]), "fold": fold}) for fold in (0, 1)]
    assert [p.name for p in output_paths(model, tmp_path / "folds")] == ["fold_0.onnx", "fold_1.onnx"]
    with pytest.raises(InputError, match="2 fold networks"):
        output_paths(model, tmp_path / "x.onnx")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript exporter, used directly here
def test_loader_refuses_files_without_medseg_metadata_and_mixed_folds(exported, tmp_path):
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Conv3d(1, 2, 3, padding=1).eval(), (torch.zeros(1, 1, 8, 8, 8),), str(plain), dynamo=False)
    with pytest.raises(InputError, match="no medseg metadata"):
        load_onnx_model(plain)
    onnx = importlib.import_module("onnx")
    graph = onnx.load(str(exported.path))
    data = json.loads(graph.metadata_props[0].value)
    data["labels"]["2"] = "something else"
    graph.metadata_props[0].value = json.dumps(data)
    folder = tmp_path / "folds"
    folder.mkdir()
    onnx.save(graph, str(folder / "fold_1.onnx"))
    (folder / "fold_0.onnx").write_bytes(exported.path.read_bytes())
    with pytest.raises(InputError, match="labels differs"):
        load_onnx_model(folder)


def test_missing_optional_packages_name_the_extra(monkeypatch):
    real = importlib.import_module

    def fake(name, *args):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(ConfigError, match=r"pip install medseg\[onnx\]"):
        onnx_metadata.require("onnxruntime")


def test_cli_exports_and_reports_the_check(checkpoint, tmp_path, run_cli):
    result = run_cli("export", "onnx", checkpoint, "-o", tmp_path / "cli.onnx", "--threads", "1")
    assert result.code == 0, result.err
    assert (tmp_path / "cli.onnx").is_file() and "argmax agreement" in result.out
    bad = run_cli("export", "onnx", checkpoint, "-o", tmp_path / "x.onnx", "--exporter", "magic")
    assert bad.code == 2 and "use auto, torchscript or dynamo" in bad.err


@pytest.mark.slow
def test_dynamo_exporter_gives_the_same_logits(checkpoint, exported, tmp_path):
    # Slow: torch.export + onnxscript take ~15 s on 2 cores even for this tiny network.
    [dynamo] = export_onnx(checkpoint, tmp_path / "dynamo.onnx", threads=1, exporter="dynamo")
    window = torch.randn(2, 1, *PATCH, generator=torch.Generator().manual_seed(3))
    a, b = OnnxNetwork(dynamo.path)(window), OnnxNetwork(exported.path)(window)
    assert float((a - b).abs().max()) < 1e-4
    assert OnnxNetwork(dynamo.path).metadata.verification["exporter"] == "dynamo"
    assert np.isclose(dynamo.argmax_agreement, 1.0, atol=1e-3)


# --- one model per ONNX folder ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fold_models(tmp_path_factory):
    """Two models of tiny dynunet folds (3 and 2 folds, other weights) and the 3-fold one exported into a folder."""
    from tests.export.conftest import fold_folder

    root = tmp_path_factory.mktemp("fold_models")
    three, two = fold_folder(root / "three", [0, 1, 2]), fold_folder(root / "two", [3, 4])
    export_onnx(three, root / "three_onnx", threads=1)
    return {"three": three, "two": two, "three_onnx": root / "three_onnx", "root": root}


def _ids(folder) -> dict[str, str]:
    return {path.name: OnnxNetwork(path).metadata.model_id["id"] for path in sorted(folder.glob("*.onnx"))}


def _copy(folder, to):
    to.mkdir()
    for path in folder.glob("*.onnx"):
        (to / path.name).write_bytes(path.read_bytes())
    return to


def test_folder_export_refuses_stale_folds_and_replace_deletes_them(fold_models, tmp_path):
    out = _copy(fold_models["three_onnx"], tmp_path / "onnx")
    before = _ids(out)
    assert sorted(before) == ["fold_0.onnx", "fold_1.onnx", "fold_2.onnx"] and len(set(before.values())) == 1
    with pytest.raises(InputError, match=r"onnx: already holds fold_2\.onnx, not written by this export.*--replace"):
        export_onnx(fold_models["two"], out, threads=1)
    assert _ids(out) == before  # refused before anything was written
    export_onnx(fold_models["two"], out, threads=1, replace=True)
    assert sorted(_ids(out)) == ["fold_0.onnx", "fold_1.onnx"]
    assert load_onnx_model(out).model_id()["id"] == load_model(fold_models["two"]).model_id()["id"]


def test_a_failing_fold_leaves_the_folder_as_it_was(fold_models, tmp_path, monkeypatch):
    from medseg.export import onnx as exporter
    from tests.export.conftest import fold_folder

    out = _copy(fold_models["three_onnx"], tmp_path / "onnx")
    before = _ids(out)
    other = fold_folder(tmp_path / "other", [5, 6, 7])  # the same file names, other weights
    real, calls = exporter.compare_with_torch, []

    def second_fold_fails(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise RuntimeError("ONNX Runtime\nfailed")
        return real(*args, **kwargs)

    monkeypatch.setattr(exporter, "compare_with_torch", second_fold_fails)
    with pytest.raises(MedsegError, match=r"fold_1.*could not be checked against PyTorch.*RuntimeError: ONNX Runtime failed\)") as error:
        export_onnx(other, out, threads=1)
    assert "\n" not in str(error.value)
    assert _ids(out) == before  # fold_0 passed, but nothing is replaced unless every fold does
    assert sorted(path.name for path in out.iterdir()) == sorted(before)  # no temporaries left


def test_loader_refuses_a_folder_mixing_exports_naming_the_odd_file(fold_models, tmp_path):
    out = tmp_path / "onnx"
    export_onnx(fold_models["two"], out, threads=1)
    (out / "fold_2.onnx").write_bytes((fold_models["three_onnx"] / "fold_2.onnx").read_bytes())  # a stale fold of another export
    with pytest.raises(InputError, match=r"fold_2\.onnx: comes from another model or export \(model id \w+\) than fold_0\.onnx"):
        load_onnx_model(out)
    (out / "fold_2.onnx").unlink()
    (out / "fold_9.onnx").write_bytes((out / "fold_0.onnx").read_bytes())  # a copied fold would weigh twice
    with pytest.raises(InputError, match=r"fold_9\.onnx: holds the same network as fold_0\.onnx"):
        load_onnx_model(out)
    (out / "fold_9.onnx").unlink()
    assert len(load_onnx_model(out).networks) == 2


def test_export_failures_reach_the_cli_as_one_error_line(checkpoint, tmp_path, run_cli, monkeypatch):
    from medseg.export import onnx as exporter

    monkeypatch.setattr(exporter, "_divisor", lambda network, patch: (1,) * len(patch))  # a check window the network cannot take
    result = run_cli("export", "onnx", checkpoint, "-o", tmp_path / "x.onnx", "--threads", "1")
    assert result.code == 2, result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {checkpoint}: the exported network could not be checked against PyTorch")
    assert not (tmp_path / "x.onnx").exists()

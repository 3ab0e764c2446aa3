"""The ONNX Runtime backend inside medseg's pipeline: an exported model gives PyTorch's masks, and a lesion_instances
model PyTorch's instance files and confidences."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the optional onnx extra is not installed (pip install medseg[onnx])")

from medseg.errors import InputError  # noqa: E402
from medseg.export.onnx import export_onnx  # noqa: E402
from medseg.export.onnx_runtime import OnnxNetwork, load_onnx_model  # noqa: E402
from medseg.infer import InferConfig, Segmenter, infer  # noqa: E402
from medseg.io import read_volume  # noqa: E402
from tests.infer.test_instances import FAST, instance_run  # noqa: E402,F401  (lesion_instances trained a few steps)


def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    total = int(x.sum() + y.sum())
    return 1.0 if total == 0 else 2.0 * int((x & y).sum()) / total


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    [network] = export_onnx(trained["run"], out, threads=1)
    return network


def test_onnx_model_segments_like_pytorch_through_the_whole_pipeline(trained, exported, segmenter):
    assert exported.max_abs_diff < 1e-3 and exported.argmax_agreement > 0.999
    onnx_model = load_onnx_model(exported.path, threads=1)
    assert all(isinstance(network, OnnxNetwork) for network in onnx_model.networks)
    assert onnx_model.model_id()["id"] == segmenter.model.model_id()["id"]  # the same weights, named the same
    onnx_segmenter = Segmenter(onnx_model, InferConfig(threads=1, compile="off"))
    torch_segmenter = Segmenter(trained["run"], InferConfig(threads=1, compile="off"))
    foreground = 0
    for path in sorted((trained["dataset"] / "imagesTs").glob("*.nii.gz")):
        image = read_volume(path)
        expected, actual = torch_segmenter.predict(image).labels, onnx_segmenter.predict(image).labels
        foreground += int((expected > 0).sum())
        for label in sorted(onnx_model.labels):
            assert dice(expected, actual, label) >= 0.999, (path.name, label)
    assert foreground > 0  # the comparison covered real segmentations, not two empty masks


def test_cli_runs_an_onnx_model_and_says_so(trained, exported, tmp_path):
    import json

    from medseg.cli import main

    image = trained["dataset"] / "imagesTs" / "case_004.nii.gz"
    with pytest.raises(SystemExit) as exit_info:
        main.main(["infer", str(exported.path), str(image), "-o", str(tmp_path / "out"), "--set", "infer.threads=1"])
    assert exit_info.value.code in (0, None)
    sidecar = json.loads((tmp_path / "out" / "case_004.json").read_text())
    assert sidecar["settings"]["backend"] == "onnxruntime" and sidecar["settings"]["device"] == "cpu"


def _instance_outputs(folder) -> tuple[dict, np.ndarray]:
    document = json.loads((folder / "case_004_lesions.json").read_text())
    return document, np.asarray(nib.load(str(folder / "case_004_instances.nii.gz")).dataobj)


def test_lesion_instances_exports_its_head_and_gives_pytorchs_instances(trained, instance_run, tmp_path):  # noqa: F811
    [exported] = export_onnx(instance_run, tmp_path / "instances.onnx", threads=1)
    image = trained["dataset"] / "imagesTs" / "case_004.nii.gz"
    infer(instance_run, image, tmp_path / "torch", FAST)  # instances: auto, on for a model with the head
    infer(exported.path, image, tmp_path / "onnx", FAST)  # the same settings; the backend follows the file
    (expected, expected_map), (actual, actual_map) = _instance_outputs(tmp_path / "torch"), _instance_outputs(tmp_path / "onnx")
    assert json.loads((tmp_path / "onnx" / "case_004.json").read_text())["settings"]["backend"] == "onnxruntime"
    assert expected["confidence"]["source"] == actual["confidence"]["source"] == "objectness"
    assert expected["lesions"], "the tiny model predicts some liver, so the comparison means something"
    confidences = [lesion["confidence"] for lesion in expected["lesions"]]
    assert max(confidences) - min(confidences) > 1e-3 or len(confidences) == 1  # the head's scores, not one constant
    np.testing.assert_array_equal(actual_map, expected_map)
    for mine, theirs in zip(actual["lesions"], expected["lesions"], strict=True):
        assert mine["confidence"] == pytest.approx(theirs["confidence"], abs=1e-4)
        assert {k: v for k, v in mine.items() if k != "confidence"} == {k: v for k, v in theirs.items() if k != "confidence"}
    # --instances on its own keeps the head's confidences (it used to switch to mean probabilities).
    assert Segmenter(exported.path, FAST.model_copy(update={"instances": True})).instances.source == "objectness"
    network = OnnxNetwork(exported.path)
    assert network.accepts_objectness and network.metadata.objectness_output == "objectness"


def test_a_lesion_instances_file_without_its_head_is_refused(instance_run, tmp_path, monkeypatch):  # noqa: F811
    from medseg.export import onnx as exporter

    # What medseg exported before the head was kept (raising=False: that medseg had no has_objectness here).
    monkeypatch.setattr(exporter, "has_objectness", lambda network: False, raising=False)
    [headless] = export_onnx(instance_run, tmp_path / "headless.onnx", threads=1)
    with pytest.raises(InputError, match=r"headless\.onnx: this lesion_instances model was exported without its lesion-centre head"):
        load_onnx_model(headless.path)

"""The ONNX Runtime backend inside medseg's pipeline: an exported model gives PyTorch's masks."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the optional onnx extra is not installed (pip install medseg[onnx])")

from medseg.export.onnx import export_onnx  # noqa: E402
from medseg.export.onnx_runtime import OnnxNetwork, load_onnx_model  # noqa: E402
from medseg.infer import InferConfig, Segmenter  # noqa: E402
from medseg.io import read_volume  # noqa: E402


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

"""Every registered network exports to ONNX and matches PyTorch (tiny networks, as tests/models/test_contract.py)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxruntime", reason="the optional onnx extra is not installed (pip install medseg[onnx])")

from medseg.export.onnx import export_onnx  # noqa: E402
from medseg.export.onnx_runtime import load_onnx_model  # noqa: E402
from medseg.infer.model import load_model  # noqa: E402
from medseg.models import available_models  # noqa: E402
from tests.export.conftest import registry_checkpoint  # noqa: E402

#: segnet's max-unpooling does not trace (TorchScript), so it goes through the dynamo exporter: ~15 s a graph.
DYNAMO_ONLY = {"segnet"}


def _cases():
    for name in sorted(available_models()):
        yield pytest.param(name, 3, "batch", id=f"{name}-3d-batch")
        marks = [pytest.mark.slow] if name in DYNAMO_ONLY else []
        yield pytest.param(name, 2, "instance", id=f"{name}-2d-instance", marks=marks)


@pytest.mark.parametrize("name,dims,norm", list(_cases()))
def test_every_registered_network_exports_and_matches_pytorch(name, dims, norm, tmp_path):
    checkpoint = registry_checkpoint(tmp_path / f"{name}.pt", name, dims, norm)
    [exported] = export_onnx(checkpoint, tmp_path / f"{name}.onnx", threads=1)
    assert exported.max_abs_diff < 1e-3 and exported.argmax_agreement == 1.0
    onnx_model, torch_model = load_onnx_model(exported.path), load_model(checkpoint)
    assert onnx_model.model_id()["id"] == torch_model.model_id()["id"]
    # The second check window had another spatial shape: the graph's spatial axes are dynamic for this network too.
    shapes = onnx_model.networks[0].metadata.verification["input_shapes"]
    assert shapes[1][0] == 2 and shapes[1][2:] != shapes[0][2:]
    window = torch.randn(1, 1, *torch_model.patch_size, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        expected = torch_model.networks[0](window)
    assert float((onnx_model.networks[0](window) - expected).abs().max()) < 1e-3

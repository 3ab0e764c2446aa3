"""One contract over every registered model: shapes, deep supervision, gradients, save/load."""

from __future__ import annotations

import io

import pytest
import torch

from medseg.losses import DeepSupervisionLoss, DiceCELoss
from medseg.models import ModelConfig, available_models, build_model
from medseg.models.registry import model_entry

IN_CHANNELS, CLASSES = 2, 3
# Tiny but non-trivial: the 3D case is anisotropic (z pooled once less), the 2D case has 4 stages.
PLANS = {
    2: {"patch_size": [32, 32], "spacing": [1.0, 1.0]},
    3: {"patch_size": [16, 16, 8], "spacing": [1.0, 1.0, 2.5]},
}


def _config(name: str, deep_supervision: bool, norm: str) -> ModelConfig:
    return ModelConfig(name=name, base_features=4, max_features=16, deep_supervision=deep_supervision, norm=norm)


def _build(config: ModelConfig, dims: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(config, IN_CHANNELS, CLASSES, PLANS[dims])


@pytest.mark.parametrize("name", sorted(available_models()))
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("deep_supervision,norm", [(True, "instance"), (False, "batch")])
def test_model_contract(name, dims, deep_supervision, norm, tmp_path):
    config = _config(name, deep_supervision, norm)
    model = _build(config, dims, seed=0)
    patch = PLANS[dims]["patch_size"]
    x = torch.randn(2, IN_CHANNELS, *patch, generator=torch.Generator().manual_seed(1))

    model.train()
    output = model(x)
    if deep_supervision and model_entry(name).deep_supervision:
        assert isinstance(output, list) and len(output) >= 2
        previous = patch
        for level in output[1:]:
            assert level.shape[:2] == (2, CLASSES)
            assert all(s <= p for s, p in zip(level.shape[2:], previous)) and list(level.shape[2:]) != previous
            previous = list(level.shape[2:])
        full = output[0]
    else:
        assert isinstance(output, torch.Tensor)
        full = output
    assert full.shape == (2, CLASSES, *patch)

    # Every parameter must be reachable from the outputs (random weights so nothing cancels).
    outputs = output if isinstance(output, list) else [output]
    generator = torch.Generator().manual_seed(2)
    objective = sum((o * torch.randn(o.shape, generator=generator)).mean() for o in outputs)
    objective.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert sum(float(p.grad.abs().sum()) for p in model.parameters()) > 0

    # The project loss accepts whatever the model returns and reaches every parameter (DDP needs that).
    model.zero_grad(set_to_none=True)
    target = torch.randint(0, CLASSES, (2, 1, *patch), generator=generator)
    loss = DeepSupervisionLoss(DiceCELoss())(model(x), target)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)

    model.eval()
    with torch.no_grad():
        reference = model(x)
    assert isinstance(reference, torch.Tensor) and reference.shape == (2, CLASSES, *patch)

    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    state = torch.load(path, weights_only=True)
    fresh = _build(config, dims, seed=123).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x), reference), "a differently seeded model should differ before loading"
    fresh.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(fresh(x), reference)


def test_state_dict_round_trips_through_bytes():
    """weights_only loading works from an in-memory buffer too (how checkpoints embed weights)."""
    model = _build(_config("dynunet", True, "instance"), 3, seed=0)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state.keys() == model.state_dict().keys()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(available_models()))
def test_model_and_loss_under_cuda_autocast(name):
    model = _build(_config(name, True, "instance"), 3, seed=0).cuda().train()
    x = torch.randn(2, IN_CHANNELS, *PLANS[3]["patch_size"], device="cuda")
    target = torch.randint(0, CLASSES, (2, 1, *PLANS[3]["patch_size"]), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = DeepSupervisionLoss(DiceCELoss(ignore_label=255))(model(x), target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

"""The lesion_instances entry beyond the shared contract: the objectness output, its inference view and its prior."""

from __future__ import annotations

import pytest
import torch

from medseg.models import ModelConfig, build_model
from medseg.models.lesion_instances import PRIOR_PROBABILITY, InstanceOutput, ObjectnessChannel, has_objectness

PLANS = {2: {"patch_size": [32, 32], "spacing": [1.0, 1.0]}, 3: {"patch_size": [16, 16, 8], "spacing": [1.0, 1.0, 2.5]}}


def _network(dims: int, deep_supervision: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(name="lesion_instances", base_features=4, max_features=16, deep_supervision=deep_supervision)
    return build_model(config, 2, 3, PLANS[dims])


@pytest.mark.parametrize("dims", [2, 3])
def test_objectness_output_next_to_the_usual_one(dims):
    network = _network(dims)
    patch = PLANS[dims]["patch_size"]
    x = torch.randn(2, 2, *patch, generator=torch.Generator().manual_seed(1))
    network.train()
    output = network(x, objectness=True)
    assert isinstance(output, InstanceOutput)
    assert isinstance(output.semantic, list) and output.semantic[0].shape == (2, 3, *patch)
    assert output.objectness.shape == (2, 1, *patch)
    network.eval()
    with torch.no_grad():
        plain, both = network(x), network(x, objectness=True)
        view = ObjectnessChannel(network)(x)
    assert torch.equal(plain, both.semantic)
    assert view.shape == (2, 4, *patch)
    assert torch.equal(view[:, :3], plain) and torch.equal(view[:, 3:], both.objectness)


def test_head_starts_at_the_prior_and_is_recognised():
    network = _network(3).eval()
    with torch.no_grad():
        probability = torch.sigmoid(network(torch.randn(1, 2, 16, 16, 8), objectness=True).objectness)
    assert probability.mean().item() == pytest.approx(PRIOR_PROBABILITY, abs=0.003)
    assert has_objectness(network)
    assert not has_objectness(build_model(ModelConfig(name="dynunet", base_features=4, max_features=16), 2, 3, PLANS[3]))


def test_every_head_parameter_is_trained_by_the_semantic_output_alone():
    """The coupling that keeps the registry contract: the semantic logits read the head's map."""
    network = _network(3, deep_supervision=False).train()
    network(torch.randn(2, 2, 16, 16, 8)).sum().backward()
    head = dict(network.objectness_head.named_parameters())
    assert head and all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.values())

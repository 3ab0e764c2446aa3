"""dynunet_midfusion: per-modality stems, mean over the modalities present, a missing (all-zero) modality left out."""

from __future__ import annotations

import pytest
import torch

from medseg.models import ModelConfig, build_model
from medseg.models.midfusion import MidFusionDynUNet, channel_availability, masked_mean

PLANS = {2: {"patch_size": [32, 32], "spacing": [1.0, 1.0]}, 3: {"patch_size": [16, 16, 8], "spacing": [1.0, 1.0, 2.5]}}


def _model(dims: int, channels: int = 3, fusion_stages: int = 2, seed: int = 0) -> MidFusionDynUNet:
    torch.manual_seed(seed)
    config = ModelConfig(name="dynunet_midfusion", base_features=4, max_features=16, fusion_stages=fusion_stages)
    return build_model(config, channels, 2, PLANS[dims]).eval()


def _input(dims: int, channels: int = 3, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, channels, *PLANS[dims]["patch_size"], generator=torch.Generator().manual_seed(1))


def test_availability_is_per_sample_and_never_empty():
    x = _input(3)
    x[0, 1] = 0  # sample 0 lacks modality 1
    x[1] = 0  # sample 1 is pure background (zero in every channel, e.g. outside a nonzero-mask-normalised brain)
    assert channel_availability(x).tolist() == [[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]


def test_masked_mean_leaves_out_zero_weights():
    a, b = torch.full((1, 2, 3), 2.0), torch.full((1, 2, 3), 100.0)
    assert torch.equal(masked_mean([a, b], torch.tensor([[1.0, 0.0]])), a)
    assert torch.equal(masked_mean([a, b], torch.tensor([[1.0, 1.0]])), (a + b) / 2)


@pytest.mark.parametrize("dims", [2, 3])
def test_a_missing_modality_is_left_out_of_the_mean(dims):
    """Zeroed channel (detected missing) == any content in that channel with an explicit zero weight."""
    model = _model(dims)
    full = _input(dims)
    zeroed = full.clone()
    zeroed[0, 1] = 0  # sample 0: modality 1 missing; sample 1: every modality present
    weights = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    with torch.no_grad():
        detected = model(zeroed)
        explicit = model(full, weights)  # modality 1 of sample 0 present but weighted 0
        present = model(full)
    torch.testing.assert_close(detected, explicit, rtol=0, atol=1e-6)
    assert not torch.allclose(detected[0], present[0], atol=1e-4), "dropping a modality changes that sample's output"
    torch.testing.assert_close(detected[1], present[1], rtol=0, atol=1e-6)  # the other sample is untouched
    # Mean, not zeros averaged in: equal to a model that only ever saw modalities 0 and 2 through the same stems.
    with torch.no_grad():
        skips_missing = model.encode(zeroed[:1], torch.tensor([[1.0, 0.0, 1.0]]))
        stems = [model.stems[m][0](full[:1, m : m + 1]) for m in (0, 2)]
    torch.testing.assert_close(skips_missing[0], (stems[0] + stems[1]) / 2, rtol=0, atol=1e-6)


def test_fusion_stages_build_the_plan_topology_and_are_clipped():
    model = _model(3, channels=2, fusion_stages=1)
    assert len(model.stems) == 2 and all(len(stem) == 1 for stem in model.stems)
    deep = _model(3, channels=2, fusion_stages=99)  # clipped: the bottleneck is always shared
    assert deep.fusion_stages == len(deep.strides) - 1 and len(deep.encoder_stages) == 1
    with torch.no_grad():
        assert deep(_input(3, channels=2)).shape == (2, 2, *PLANS[3]["patch_size"])


def test_the_stems_see_only_their_own_modality():
    model = _model(2, channels=2)
    x = _input(2, channels=2, batch=1).requires_grad_(True)
    model.stems[0][0](x[:, :1]).sum().backward()
    assert x.grad[:, 1].abs().sum() == 0 and x.grad[:, 0].abs().sum() > 0

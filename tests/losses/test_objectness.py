"""The objectness term: centre heatmaps on crafted lesions, the focal loss by hand, wiring, and a tiny overfit."""

from __future__ import annotations

import math

import pytest
import torch

from medseg.errors import ConfigError
from medseg.losses import LossConfig, ObjectnessLossConfig, build_loss
from medseg.losses.objectness import InstanceLoss, ObjectnessLoss, centre_heatmap, focal_objectness, objectness_label_values
from medseg.models.lesion_instances import InstanceOutput


def _mask(shape, *boxes) -> torch.Tensor:
    mask = torch.zeros((1, 1, *shape), dtype=torch.bool)
    for box in boxes:
        mask[(0, 0, *box)] = True
    return mask


def test_centre_heatmap_of_a_cube_and_a_single_voxel():
    mask = _mask((11, 11, 11), (slice(2, 7), slice(2, 7), slice(2, 7)), (10, 10, 10))
    heat = centre_heatmap(mask, sigma=1.0, max_depth=8)[0, 0]
    # depths along the cube's middle row 1, 2, 3, 2, 1: the centre (depth 3) is the peak
    expected = [0.0, 0.0, math.exp(-2), math.exp(-0.5), 1.0, math.exp(-0.5), math.exp(-2), 0.0]
    assert heat[:8, 4, 4].tolist() == pytest.approx(expected, abs=1e-6)
    assert heat[10, 10, 10].item() == 1.0  # a one-voxel lesion is all peak
    assert heat[~mask[0, 0]].abs().max().item() == 0.0


def test_each_lesion_gets_its_own_peak_and_the_patch_border_does_not_erode():
    mask = _mask((20, 9), (slice(0, 3), slice(3, 6)), (slice(10, 19), slice(0, 9)))  # 2D: a lesion cut by the border
    heat = centre_heatmap(mask, sigma=1.0, max_depth=8)[0, 0]
    assert heat[0:3, 3:6].max().item() == 1.0 and heat[10:19].max().item() == 1.0
    assert heat[0, 4].item() == 1.0  # on the patch edge, but the middle of the lesion's depth there
    assert heat[14, 4].item() == 1.0 and heat[10, 4].item() == pytest.approx(math.exp(-8))  # depth 5 centre, depth 1 rim


def test_depth_is_capped_so_large_lesions_have_a_core_of_peaks():
    mask = _mask((34, 34), (slice(2, 32), slice(2, 32)))
    heat = centre_heatmap(mask, sigma=1.0, max_depth=2)[0, 0]
    assert (heat[3:31, 3:31] == 1.0).all()  # depth 2 (the cap) everywhere but the rim
    assert heat[2, 10].item() == pytest.approx(math.exp(-0.5)) and heat[1, 10].item() == 0.0


def test_focal_loss_by_hand():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0]).view(1, 1, 4)
    target = torch.tensor([1.0, 0.5, 0.0, 0.0]).view(1, 1, 4)
    p = torch.sigmoid(logits)[0, 0]
    by_hand = (-(1 - p[0]) ** 2 * torch.log(p[0])
               - (1 - 0.5) ** 4 * p[1] ** 2 * torch.log(1 - p[1])
               - p[2] ** 2 * torch.log(1 - p[2]) - p[3] ** 2 * torch.log(1 - p[3]))  # one peak: divided by 1
    assert focal_objectness(logits, target).item() == pytest.approx(by_hand.item(), rel=1e-6)
    valid = torch.tensor([True, True, False, True]).view(1, 1, 4)
    assert focal_objectness(logits, target, valid).item() == pytest.approx((by_hand + p[2] ** 2 * torch.log(1 - p[2])).item(), rel=1e-6)


def test_objectness_loss_ignores_ignored_voxels_and_uses_only_lesion_labels():
    labels = torch.zeros((1, 1, 8, 8, 8), dtype=torch.long)
    labels[0, 0, 2:5, 2:5, 2:5] = 2  # tumour
    labels[0, 0, 6:, 6:, 6:] = 1  # liver: not a lesion
    logits = torch.full((1, 1, 8, 8, 8), -4.0)
    loss = ObjectnessLoss([2])
    reference = focal_objectness(logits, centre_heatmap(labels == 2))
    assert loss(logits, labels).item() == pytest.approx(reference.item(), rel=1e-6)
    labels[0, 0, 0, 0, 0] = 255
    ignoring = ObjectnessLoss([2], ignore_label=255)
    assert ignoring(logits, labels).item() < reference.item()


def test_instance_loss_adds_the_weighted_term_and_passes_plain_outputs_through():
    semantic_loss = build_loss(LossConfig())
    loss = build_loss(LossConfig(objectness=ObjectnessLossConfig(weight=0.5)), objectness_values=(2,))
    assert isinstance(loss, InstanceLoss)
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (2, 1, 8, 8, 8), generator=generator)
    logits, objectness = torch.randn(2, 3, 8, 8, 8, generator=generator), torch.randn(2, 1, 8, 8, 8, generator=generator)
    expected = semantic_loss(logits, target) + 0.5 * ObjectnessLoss([2])(objectness, target)
    assert loss(InstanceOutput(logits, objectness), target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss(logits, target).item() == pytest.approx(semantic_loss(logits, target).item())


def test_lesion_values_follow_the_config_then_infer_then_the_names():
    labels = {0: "background", 1: "liver", 2: "tumor"}
    assert objectness_label_values(ObjectnessLossConfig(), None, labels) == (2,)
    assert objectness_label_values(ObjectnessLossConfig(), ["liver"], labels) == (1,)
    assert objectness_label_values(ObjectnessLossConfig(lesion_labels=["1", "tumor"]), ["liver"], labels) == (1, 2)
    with pytest.raises(ConfigError, match="lesion_labels"):
        objectness_label_values(ObjectnessLossConfig(), None, {0: "background", 1: "liver"})


def test_objectness_term_decreases_on_a_tiny_overfit():
    """A few optimisation steps on one tiny 3D patch with two lesions: the objectness term falls and the centres light up."""
    from medseg.models import ModelConfig, build_model

    torch.manual_seed(0)
    network = build_model(ModelConfig(name="lesion_instances", base_features=4, max_features=16, deep_supervision=False), 1, 3,
                          {"patch_size": [16, 16, 16], "spacing": [1.0, 1.0, 1.0]})
    labels = torch.zeros((1, 1, 16, 16, 16), dtype=torch.long)
    labels[0, 0, 3:8, 3:8, 3:8] = 2
    labels[0, 0, 10:13, 9:14, 9:14] = 2
    image = labels.float() + 0.1 * torch.randn(labels.shape, generator=torch.Generator().manual_seed(1))
    objectness = ObjectnessLoss([2])
    loss = build_loss(LossConfig(), objectness_values=(2,))
    optimizer = torch.optim.AdamW(network.parameters(), lr=0.01)
    network.train()
    terms = []
    for _ in range(25):
        optimizer.zero_grad()
        output = network(image, objectness=True)
        terms.append(objectness(output.objectness, labels).item())
        loss(output, labels).backward()
        optimizer.step()
    assert terms[-1] < 0.5 * terms[0]
    network.eval()
    with torch.no_grad():
        centres = torch.sigmoid(network(image, objectness=True).objectness)[0, 0]
    assert centres[5, 5, 5] > 5 * centres[0, 15, 0]  # a lesion centre against a far background corner

"""Dice + CE: exact values on crafted cases, ignore label, deep supervision, MONAI agreement."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss as MonaiDiceCELoss

from medseg.config.loader import build as build_config
from medseg.errors import ConfigError
from medseg.losses import (
    DeepSupervisionLoss,
    DiceCELoss,
    LossConfig,
    build_loss,
    deep_supervision_weights,
    downsample_target,
)

MARGIN = 30.0  # logit margin that makes softmax one-hot to ~1e-13


def _confident_logits(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """(B, *spatial) labels -> logits whose softmax is (numerically) the one-hot of ``labels``."""
    onehot = torch.nn.functional.one_hot(labels, classes).movedim(-1, 1).float()
    return MARGIN * onehot


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(7)


def test_perfect_prediction(generator):
    target = torch.randint(0, 3, (2, 6, 6, 6), generator=generator)
    logits = _confident_logits(target, 3)
    assert DiceCELoss(dice_weight=1, ce_weight=0)(logits, target) < 1e-6
    assert DiceCELoss(dice_weight=0, ce_weight=1)(logits, target) < 1e-6
    wrong = _confident_logits((target + 1) % 3, 3)
    assert DiceCELoss(dice_weight=1, ce_weight=0)(wrong, target) > 0.99


def test_target_with_or_without_channel_axis(generator):
    logits = torch.randn(2, 3, 5, 5, generator=generator)
    target = torch.randint(0, 3, (2, 5, 5), generator=generator)
    loss = DiceCELoss()
    assert torch.equal(loss(logits, target), loss(logits, target[:, None].float()))
    with pytest.raises(ValueError, match="target"):
        loss(logits, target[:, :4])


@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("ignore_label", [255, 3])
def test_ignore_label_is_ignored(generator, batch_dice, include_background, ignore_label):
    target = torch.randint(0, 3, (2, 1, 6, 6, 6), generator=generator)
    ignored = torch.rand(target.shape, generator=generator) < 0.3
    target[ignored] = ignore_label
    loss = DiceCELoss(include_background=include_background, batch_dice=batch_dice, ignore_label=ignore_label)

    logits = torch.randn(2, 3, 6, 6, 6, generator=generator, requires_grad=True)
    value = loss(logits, target)
    value.backward()
    mask = ignored.expand_as(logits)
    assert torch.all(logits.grad[mask] == 0)
    assert logits.grad[~mask].abs().sum() > 0

    changed = logits.detach().clone()
    changed[mask] = torch.randn(int(mask.sum()), generator=generator) * 10
    assert torch.allclose(loss(changed, target), value.detach(), atol=1e-6)
    # ...while changing an annotated voxel does change it
    changed[~mask] += 5 * torch.randn(int((~mask).sum()), generator=generator)
    assert not torch.allclose(loss(changed, target), value.detach(), atol=1e-4)


def test_ignore_label_equals_loss_on_annotated_voxels_only(generator):
    """Ignoring half of a volume gives the same loss as the other half on its own."""
    target = torch.randint(0, 3, (1, 1, 4, 4, 8), generator=generator)
    logits = torch.randn(1, 3, 4, 4, 8, generator=generator)
    masked = target.clone()
    masked[..., 4:] = 255
    with_ignore = DiceCELoss(ignore_label=255)(logits, masked)
    cropped = DiceCELoss()(logits[..., :4], target[..., :4])
    assert torch.allclose(with_ignore, cropped, atol=1e-6)


def test_all_ignored_batch_is_finite():
    target = torch.full((1, 1, 4, 4), 255)
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    value = DiceCELoss(ignore_label=255)(logits, target)
    value.backward()
    assert torch.isfinite(value) and torch.all(logits.grad == 0)


def test_batch_dice_differs_from_per_sample_dice():
    # Sample 0: one foreground voxel, predicted exactly. Sample 1: no foreground, one false positive.
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    target[0, 0, 0] = 1
    predicted = target.clone()
    predicted[1, 3, 3] = 1
    logits = _confident_logits(predicted, 2)
    per_sample = DiceCELoss(ce_weight=0)(logits, target)
    batch = DiceCELoss(ce_weight=0, batch_dice=True)(logits, target)
    # per sample: Dice 1 and ~0 -> loss 0.5; batch: 2*1 / (2 predicted + 1 true) = 2/3 -> loss 1/3
    assert per_sample.item() == pytest.approx(0.5, abs=1e-4)
    assert batch.item() == pytest.approx(1 / 3, abs=1e-4)


def test_background_exclusion():
    # 8 voxels, 2 foreground; prediction marks those 2 plus 2 false positives.
    target = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1]])
    predicted = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]])
    logits = _confident_logits(predicted, 2)
    foreground_dice = 2 * 2 / (4 + 2)  # 2/3
    background_dice = 2 * 4 / (4 + 6)  # 0.8
    excluded = DiceCELoss(ce_weight=0, include_background=False)(logits, target)
    included = DiceCELoss(ce_weight=0, include_background=True)(logits, target)
    assert excluded.item() == pytest.approx(1 - foreground_dice, abs=1e-4)
    assert included.item() == pytest.approx(1 - (foreground_dice + background_dice) / 2, abs=1e-4)


def test_weights_of_terms(generator):
    logits = torch.randn(2, 3, 4, 4, 4, generator=generator)
    target = torch.randint(0, 3, (2, 1, 4, 4, 4), generator=generator)
    dice = DiceCELoss(ce_weight=0)(logits, target)
    ce = DiceCELoss(dice_weight=0)(logits, target)
    assert torch.allclose(DiceCELoss(dice_weight=0.3, ce_weight=2.0)(logits, target), 0.3 * dice + 2.0 * ce)


@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("shape", [(2, 4, 6, 5, 7), (3, 3, 9, 8)])
def test_agrees_with_monai(generator, include_background, batch, shape):
    logits = torch.randn(shape, generator=generator) * 3
    target = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=generator)
    ours = DiceCELoss(include_background=include_background, batch_dice=batch, smooth_nr=1e-5, smooth_dr=1e-5)
    monai = MonaiDiceCELoss(
        include_background=include_background,
        to_onehot_y=True,
        softmax=True,
        batch=batch,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
    )
    assert abs(ours(logits, target).item() - monai(logits, target).item()) < 1e-5


def test_bf16_logits_give_fp32_loss(generator):
    logits = torch.randn(1, 3, 4, 4, 4, generator=generator)
    target = torch.randint(0, 3, (1, 1, 4, 4, 4), generator=generator)
    value = DiceCELoss()(logits.bfloat16(), target)
    assert value.dtype == torch.float32 and torch.isfinite(value)


def test_deep_supervision_weights():
    for n in range(1, 7):
        weights = deep_supervision_weights(n)
        assert sum(weights) == pytest.approx(1.0)
        if n > 1:
            assert weights[-1] == 0 and all(w > 0 for w in weights[:-1])
            assert all(a == pytest.approx(2 * b) for a, b in zip(weights[:-2], weights[1:-1]))
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(3) == pytest.approx([2 / 3, 1 / 3, 0.0])


def test_downsample_target_keeps_labels():
    target = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    target[..., 2:6, 2:6] = 2
    target[..., 0:2, 0:2] = 255
    small = downsample_target(target, (4, 4))
    assert small.shape == (1, 1, 4, 4)
    assert set(small.unique().tolist()) == {0, 2, 255}
    assert (small == 2).sum() == 4


def test_deep_supervision_loss(generator):
    target = torch.randint(0, 3, (2, 1, 8, 8, 8), generator=generator)
    outputs = [
        torch.randn(2, 3, 8, 8, 8, generator=generator, requires_grad=True),
        torch.randn(2, 3, 4, 4, 4, generator=generator, requires_grad=True),
        torch.randn(2, 3, 2, 2, 2, generator=generator, requires_grad=True),
    ]
    base = DiceCELoss()
    loss = DeepSupervisionLoss(base)
    value = loss(outputs, target)
    expected = 2 / 3 * base(outputs[0], target) + 1 / 3 * base(outputs[1], downsample_target(target, (4, 4, 4)))
    assert torch.allclose(value, expected, atol=1e-6)
    value.backward()
    assert torch.all(outputs[2].grad == 0)  # coarsest output excluded (but still in the graph, for DDP)
    assert outputs[0].grad.abs().sum() > 0 and outputs[1].grad.abs().sum() > 0
    # a single tensor (eval mode / no deep supervision) is the plain loss
    assert torch.equal(loss(outputs[0].detach(), target), base(outputs[0].detach(), target))
    # custom weights, normalized
    custom = DeepSupervisionLoss(base, [1.0, 1.0, 0.0])(outputs, target)
    half = downsample_target(target, (4, 4, 4))
    assert torch.allclose(custom, 0.5 * base(outputs[0], target) + 0.5 * base(outputs[1], half))


def test_build_loss_from_config(generator):
    config = build_config(LossConfig, {"ignore_label": 255, "batch_dice": True})
    loss = build_loss(config)
    assert loss.loss.ignore_label == 255 and loss.loss.batch_dice
    with pytest.raises(ConfigError, match="both 0"):
        build_loss(LossConfig(dice_weight=0, ce_weight=0))
    with pytest.raises(ConfigError, match="valid keys"):
        build_config(LossConfig, {"ignore_lable": 255})

import numpy as np
import pytest
import torch

from medseg.transforms.augment import AugmentConfig, build_augmentation, sampled_patch_size


def _sample(rng, shape):
    image = torch.from_numpy(rng.normal(size=(1, *shape)).astype(np.float32))
    label = torch.zeros((1, *shape))
    slices = tuple(slice(s // 4, 3 * s // 4) for s in shape)
    label[(0, *slices)] = 1
    label[(0, *tuple(slice(s // 2, 3 * s // 4) for s in shape))] = 2
    return {"image": image, "label": label}


@pytest.mark.parametrize("patch", [(16, 20, 12), (24, 20)])
def test_output_shape_and_labels_stay_integral(rng, patch):
    config = AugmentConfig(rotation_prob=1, scale_prob=1, elastic_prob=0.5, noise_prob=1, blur_prob=1, lowres_prob=1, gamma_prob=1)
    pipeline = build_augmentation(config, patch, seed=3)
    for _ in range(5):
        out = pipeline(_sample(rng, sampled_patch_size(config, patch)))
        assert tuple(out["image"].shape) == (1, *patch) and tuple(out["label"].shape) == (1, *patch)
        values = set(torch.unique(out["label"]).tolist())
        assert values <= {0.0, 1.0, 2.0}, "labels must be resampled with nearest neighbour only"
        assert torch.isfinite(out["image"]).all()


def test_same_seed_same_result(rng):
    config = AugmentConfig(rotation_prob=1, scale_prob=1)
    sample = _sample(rng, sampled_patch_size(config, (16, 16, 16)))
    a = build_augmentation(config, (16, 16, 16), seed=7)(dict(sample))
    b = build_augmentation(config, (16, 16, 16), seed=7)(dict(sample))
    torch.testing.assert_close(a["image"], b["image"])


def test_disabled_is_a_centre_crop(rng):
    config = AugmentConfig(enabled=False)
    sample = _sample(rng, (20, 20, 20))
    out = build_augmentation(config, (10, 10, 10))(sample)
    torch.testing.assert_close(out["image"], sample["image"][:, 5:15, 5:15, 5:15])


def test_margin_only_when_resampling():
    assert sampled_patch_size(AugmentConfig(), (40, 40, 40)) == (50, 50, 50)
    assert sampled_patch_size(AugmentConfig(rotation_prob=0, scale_prob=0), (40, 40, 40)) == (40, 40, 40)


def test_in_plane_rotation_for_anisotropic_keeps_slices(rng):
    """Rotation about z only: a label that is constant along z stays constant along z."""
    config = AugmentConfig(rotation_prob=1, scale_prob=0, rotation_axes="in_plane", mirror_prob=0, noise_prob=0, blur_prob=0,
                           brightness_prob=0, contrast_prob=0, lowres_prob=0, gamma_prob=0)
    label = torch.zeros((1, 30, 30, 10))
    label[0, 10:20, 12:18, :] = 1
    out = build_augmentation(config, (24, 24, 8), seed=1)({"image": label.clone(), "label": label})
    assert (out["label"][..., :1] == out["label"]).all()

import numpy as np
import pytest
import torch

from medseg.transforms.augment import AugmentConfig, build_augmentation, rotation_limit_degrees, sampled_patch_size


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
    assert sampled_patch_size(AugmentConfig(spatial_margin=1.25), (40, 40, 40)) == (50, 50, 50)
    assert sampled_patch_size(AugmentConfig(rotation_prob=0, scale_prob=0), (40, 40, 40)) == (40, 40, 40)


@pytest.mark.parametrize("patch,anisotropic,expected", [
    ((40, 56, 40), False, (73, 80, 64)),  # nnU-Net 2.8.1's get_patch_size for its hippocampus patch, run beside this
    ((64, 64, 64), False, (102, 102, 102)),
    ((192, 160, 20), True, (225, 225, 20)),  # thick slices: 180 degrees in-plane (capped at 90), slice axis kept
    ((56, 40), False, (65, 65)),  # 2D, nearly square: 180 degrees
    ((512, 128), False, (620, 150)),  # 2D, elongated: 15 degrees
])
def test_default_sampled_patch_is_nnunets_initial_patch(patch, anisotropic, expected):
    assert sampled_patch_size(AugmentConfig(), patch, anisotropic) == expected


def test_rotation_limits_are_nnunets():
    config = AugmentConfig()
    assert rotation_limit_degrees(config, (40, 56, 40), in_plane=False) == 30
    assert rotation_limit_degrees(config, (192, 160, 20), in_plane=True) == 180
    assert rotation_limit_degrees(config, (256, 256), in_plane=False) == 180
    assert rotation_limit_degrees(config, (512, 128), in_plane=False) == 15
    assert rotation_limit_degrees(AugmentConfig(rotation_degrees=10), (256, 256), in_plane=False) == 10


def test_in_plane_scaling_keeps_the_slice_axis(rng):
    """nnU-Net's dummy-2D augmentation scales each slice, never the slice axis: a slab keeps its thickness when zoomed out."""
    config = AugmentConfig(rotation_prob=0, scale_prob=1, scale_range=(1.4, 1.4), rotation_axes="in_plane", mirror_prob=0,
                           noise_prob=0, blur_prob=0, brightness_prob=0, contrast_prob=0, lowres_prob=0, gamma_prob=0,
                           inverted_gamma_prob=0)
    label = torch.zeros((1, 40, 40, 12))
    label[0, 10:30, 10:30, 4:8] = 1
    out = build_augmentation(config, (32, 32, 12), seed=0)({"image": label.clone(), "label": label})["label"][0]
    assert int(out.any(dim=(0, 1)).sum()) == 4  # 4 slices before and after
    assert int(out.any(dim=(1, 2)).sum()) < 20  # in-plane it shrank


def test_in_plane_rotation_for_anisotropic_keeps_slices(rng):
    """Rotation about z only: a label that is constant along z stays constant along z."""
    config = AugmentConfig(rotation_prob=1, scale_prob=0, rotation_axes="in_plane", mirror_prob=0, noise_prob=0, blur_prob=0,
                           brightness_prob=0, contrast_prob=0, lowres_prob=0, gamma_prob=0)
    label = torch.zeros((1, 30, 30, 10))
    label[0, 10:20, 12:18, :] = 1
    out = build_augmentation(config, (24, 24, 8), seed=1)({"image": label.clone(), "label": label})
    assert (out["label"][..., :1] == out["label"]).all()

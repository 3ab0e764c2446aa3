"""Training augmentation: spatial (rotation, scaling, mirroring, optional elastic) and intensity
(noise, blur, brightness, contrast, gamma, low-resolution simulation), then modality dropout
(:mod:`medseg.transforms.modality`).

Built from MONAI transforms. Rotation and scaling are drawn separately (as nnU-Net does) but
applied in ONE resampling, which also crops the enlarged sampled patch back to the patch size,
so the image is interpolated once and the label is only ever resampled with nearest neighbour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping

import numpy as np
import torch
from monai.transforms import (
    Affine,
    CenterSpatialCrop,
    Compose,
    MapTransform,
    Rand2DElasticd,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandomizableTransform,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    RandSimulateLowResolutiond,
)

from medseg.transforms.config import AugmentConfig
from medseg.transforms.modality import RandModalityDropoutd

IMAGE, LABEL = "image", "label"


def sampled_patch_size(config: AugmentConfig, patch_size: tuple[int, ...]) -> tuple[int, ...]:
    """Size to crop from the case before augmentation: enlarged when rotation/scaling will crop it back."""
    if not config.uses_spatial_resampling():
        return tuple(patch_size)
    return tuple(int(math.ceil(size * config.spatial_margin)) for size in patch_size)


class RandRotateScaleCropd(RandomizableTransform, MapTransform):
    """Draw rotation and scaling independently, apply both in one resampling, crop to ``patch_size``."""

    def __init__(self, config: AugmentConfig, patch_size: tuple[int, ...], anisotropic: bool) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, [IMAGE, LABEL], allow_missing_keys=True)
        self.config, self.patch_size = config, tuple(patch_size)
        dims = len(patch_size)
        in_plane = config.rotation_axes == "in_plane" or (config.rotation_axes == "auto" and anisotropic)
        # Axis order is (x, y, z) after RAS preprocessing; "in plane" means about z (axial slices).
        self.rotated_axes = [0] if dims == 2 else ([2] if in_plane else [0, 1, 2])
        self.crop = CenterSpatialCrop(self.patch_size)

    def randomize(self, data=None) -> None:
        dims = len(self.patch_size)
        rotate = self.R.uniform() < self.config.rotation_prob
        scale = self.R.uniform() < self.config.scale_prob
        limit = np.deg2rad(self.config.rotation_degrees)
        angles = [0.0] * (1 if dims == 2 else 3)
        if rotate:
            for axis in self.rotated_axes:
                angles[axis] = float(self.R.uniform(-limit, limit))
        self.angles = angles if rotate else None
        self.scale = float(self.R.uniform(*self.config.scale_range)) if scale else None

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        self.randomize()
        out = dict(data)
        if self.angles is None and self.scale is None:
            for key in self.key_iterator(out):
                out[key] = self.crop(out[key])
            return out
        dims = len(self.patch_size)
        transform_args = dict(
            rotate_params=self.angles, scale_params=[self.scale or 1.0] * dims, spatial_size=self.patch_size, padding_mode="zeros", image_only=True
        )
        for key in self.key_iterator(out):
            mode = "nearest" if key == LABEL else "bilinear"
            out[key] = Affine(mode=mode, **transform_args)(out[key])
        return out


def build_augmentation(config: AugmentConfig, patch_size: tuple[int, ...], anisotropic: bool = False, seed: int = 0) -> Callable[[dict], dict]:
    """Augmentation for one sample ``{"image": (C, *patch_margin), "label": (1, *patch_margin)}``."""
    dims = len(patch_size)
    if not config.enabled:
        return Compose([_CropOnly(patch_size)])
    transforms: list = [RandRotateScaleCropd(config, patch_size, anisotropic)]
    if config.elastic_prob > 0:
        elastic = Rand3DElasticd if dims == 3 else Rand2DElasticd
        spacing = config.elastic_sigma if dims == 3 else (config.elastic_sigma[0], config.elastic_sigma[0])
        kwargs = dict(sigma_range=config.elastic_sigma, magnitude_range=config.elastic_magnitude) if dims == 3 else dict(spacing=spacing, magnitude_range=config.elastic_magnitude)
        transforms.append(elastic(keys=[IMAGE, LABEL], prob=config.elastic_prob, mode=("bilinear", "nearest"), padding_mode="zeros", **kwargs))
    transforms += [
        RandGaussianNoised(keys=IMAGE, prob=config.noise_prob, std=config.noise_std),
        RandGaussianSmoothd(keys=IMAGE, prob=config.blur_prob, sigma_x=config.blur_sigma, sigma_y=config.blur_sigma, sigma_z=config.blur_sigma),
        RandScaleIntensityd(keys=IMAGE, prob=config.brightness_prob, factors=(config.brightness_range[0] - 1, config.brightness_range[1] - 1)),
        RandScaleIntensityFixedMeand(keys=IMAGE, prob=config.contrast_prob, factors=(config.contrast_range[0] - 1, config.contrast_range[1] - 1), preserve_range=True),
        RandSimulateLowResolutiond(keys=IMAGE, prob=config.lowres_prob, zoom_range=config.lowres_zoom, upsample_mode="trilinear" if dims == 3 else "bilinear"),
        RandAdjustContrastd(keys=IMAGE, prob=config.gamma_prob, gamma=config.gamma_range, retain_stats=True),
    ]
    axes = config.mirror_axes if config.mirror_axes is not None else list(range(dims))
    transforms += [RandFlipd(keys=[IMAGE, LABEL], prob=config.mirror_prob, spatial_axis=axis) for axis in axes]
    if config.modality_dropout_prob > 0:  # last: noise or intensity changes would make a dropped channel nonzero again
        transforms.append(RandModalityDropoutd(config.modality_dropout_prob))
    pipeline = Compose(transforms)
    pipeline.set_random_state(seed=seed)
    return pipeline


class _CropOnly:
    def __init__(self, patch_size):
        self.crop = CenterSpatialCrop(tuple(patch_size))

    def __call__(self, data):
        return {key: self.crop(value) if key in (IMAGE, LABEL) else value for key, value in data.items()}

"""Training augmentation: spatial (rotation, scaling, mirroring, optional elastic) and intensity
(noise, blur, brightness, contrast, low-resolution simulation, inverted gamma, gamma), then modality
dropout (:mod:`medseg.transforms.modality`).

The defaults are nnU-Net v2's (``nnUNetTrainer.get_training_transforms``): transforms, order,
probabilities and ranges; the per-channel intensity transforms live in
:mod:`medseg.transforms.intensity`. Rotation and scaling are drawn separately (as nnU-Net does) but
applied in ONE resampling, which also crops the enlarged sampled patch back to the patch size, so
the image is interpolated once and the label is only ever resampled with nearest neighbour
(nnU-Net interpolates one-hot labels linearly instead).
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
    RandFlipd,
    RandGaussianNoised,
    RandomizableTransform,
)

from medseg.transforms.config import AugmentConfig
from medseg.transforms.intensity import (
    RandChannelBlurd,
    RandChannelBrightnessd,
    RandChannelContrastd,
    RandChannelGammad,
    RandChannelLowResd,
)
from medseg.transforms.modality import RandModalityDropoutd

IMAGE, LABEL = "image", "label"
SLICE_AXIS = 2  # axes are (x, y, z) after RAS preprocessing: thick slices lie along z
NNUNET_MIN_SCALE = 0.85  # the scale nnU-Net's initial patch size allows for (not its scaling range's 0.7)


def in_plane_only(config: AugmentConfig, dims: int, anisotropic: bool) -> bool:
    """3D data augmented slice by slice: rotation about z and scaling in-plane only (nnU-Net's "dummy 2D")."""
    return dims == 3 and (config.rotation_axes == "in_plane" or (config.rotation_axes == "auto" and anisotropic))


def rotation_limit_degrees(config: AugmentConfig, patch_size: tuple[int, ...], in_plane: bool) -> float:
    """``rotation_degrees``, or nnU-Net's choice: 30 in 3D, 180 in-plane, 2D 180 (15 for patches longer than 1.5:1)."""
    if config.rotation_degrees is not None:
        return float(config.rotation_degrees)
    if len(patch_size) == 2:
        return 15.0 if max(patch_size) / min(patch_size) > 1.5 else 180.0
    return 180.0 if in_plane else 30.0


def _axis_rotations(angle: float, dims: int) -> list[np.ndarray]:
    c, s = math.cos(angle), math.sin(angle)
    if dims == 2:
        return [np.array([[c, -s], [s, c]])]
    return [np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])]


def nnunet_initial_patch(patch_size: tuple[int, ...], max_degrees: float, in_plane: bool = False) -> tuple[int, ...]:
    """nnU-Net's ``get_patch_size``: the patch-size vector turned by the largest angle (at most 90 degrees, one way
    only, as nnU-Net) about each axis in turn, the per-axis maximum of its extent, divided by 0.85; the slice axis
    kept when in-plane. Hippocampus (40, 56, 40): (73, 80, 64), where a fixed 1.25 margin gave (50, 70, 50)."""
    vector = np.asarray(patch_size, dtype=float)
    extent = vector.copy()
    angle = math.radians(min(max_degrees, 90.0))
    for rotation in _axis_rotations(angle, len(patch_size)):
        extent = np.maximum(extent, np.abs(rotation.T @ vector))
    size = (extent / NNUNET_MIN_SCALE).astype(int)
    if in_plane:
        size[SLICE_AXIS] = patch_size[SLICE_AXIS]
    return tuple(int(v) for v in size)


def sampled_patch_size(config: AugmentConfig, patch_size: tuple[int, ...], anisotropic: bool = False) -> tuple[int, ...]:
    """Size to crop from the case before augmentation: enlarged when rotation/scaling will crop it back
    (``spatial_margin`` times the patch, or by default nnU-Net's initial patch size)."""
    if not config.uses_spatial_resampling():
        return tuple(patch_size)
    if config.spatial_margin is not None:
        return tuple(int(math.ceil(size * config.spatial_margin)) for size in patch_size)
    in_plane = in_plane_only(config, len(patch_size), anisotropic)
    return nnunet_initial_patch(tuple(patch_size), rotation_limit_degrees(config, tuple(patch_size), in_plane), in_plane)


class RandRotateScaleCropd(RandomizableTransform, MapTransform):
    """Draw rotation and scaling independently, apply both in one resampling, crop to ``patch_size``."""

    def __init__(self, config: AugmentConfig, patch_size: tuple[int, ...], anisotropic: bool) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, [IMAGE, LABEL], allow_missing_keys=True)
        self.config, self.patch_size = config, tuple(patch_size)
        dims = len(patch_size)
        self.in_plane = in_plane_only(config, dims, anisotropic)
        self.rotated_axes = [0] if dims == 2 else ([SLICE_AXIS] if self.in_plane else [0, 1, 2])
        self.limit = np.deg2rad(rotation_limit_degrees(config, self.patch_size, self.in_plane))
        self.crop = CenterSpatialCrop(self.patch_size)

    def randomize(self, data=None) -> None:
        dims = len(self.patch_size)
        rotate = self.R.uniform() < self.config.rotation_prob
        scale = self.R.uniform() < self.config.scale_prob
        angles = [0.0] * (1 if dims == 2 else 3)
        if rotate:
            for axis in self.rotated_axes:
                angles[axis] = float(self.R.uniform(-self.limit, self.limit))
        self.angles = angles if rotate else None
        self.scale = float(self.R.uniform(*self.config.scale_range)) if scale else None

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        self.randomize()
        out = dict(data)
        if self.angles is None and self.scale is None:
            for key in self.key_iterator(out):
                out[key] = self.crop(out[key])
            return out
        scales = [self.scale or 1.0] * len(self.patch_size)
        if self.in_plane:
            scales[SLICE_AXIS] = 1.0
        transform_args = dict(
            rotate_params=self.angles, scale_params=scales, spatial_size=self.patch_size, padding_mode="zeros", image_only=True
        )
        for key in self.key_iterator(out):
            mode = "nearest" if key == LABEL else "bilinear"
            out[key] = Affine(mode=mode, **transform_args)(out[key])
        return out


def intensity_transforms(config: AugmentConfig, in_plane: bool) -> list:
    """nnU-Net's intensity transforms in nnU-Net's order (noise, blur, brightness, contrast, low-res, inverted gamma, gamma)."""
    return [
        RandGaussianNoised(keys=IMAGE, prob=config.noise_prob, std=config.noise_std),  # sigma ~ U(0, noise_std) per sample
        RandChannelBlurd(config.blur_prob, config.blur_channel_prob, config.blur_sigma),
        RandChannelBrightnessd(config.brightness_prob, config.brightness_range),
        RandChannelContrastd(config.contrast_prob, config.contrast_range),
        RandChannelLowResd(config.lowres_prob, config.lowres_channel_prob, config.lowres_zoom, (SLICE_AXIS,) if in_plane else ()),
        RandChannelGammad(config.inverted_gamma_prob, config.gamma_range, invert=True),
        RandChannelGammad(config.gamma_prob, config.gamma_range),
    ]


def build_augmentation(config: AugmentConfig, patch_size: tuple[int, ...], anisotropic: bool = False, seed: int = 0) -> Callable[[dict], dict]:
    """Augmentation for one sample ``{"image": (C, *sampled), "label": (1, *sampled)}``, ``sampled`` from :func:`sampled_patch_size`."""
    dims = len(patch_size)
    if not config.enabled:
        return Compose([_CropOnly(patch_size)])
    transforms: list = [RandRotateScaleCropd(config, patch_size, anisotropic)]
    if config.elastic_prob > 0:
        elastic = Rand3DElasticd if dims == 3 else Rand2DElasticd
        spacing = config.elastic_sigma if dims == 3 else (config.elastic_sigma[0], config.elastic_sigma[0])
        kwargs = dict(sigma_range=config.elastic_sigma, magnitude_range=config.elastic_magnitude) if dims == 3 else dict(spacing=spacing, magnitude_range=config.elastic_magnitude)
        transforms.append(elastic(keys=[IMAGE, LABEL], prob=config.elastic_prob, mode=("bilinear", "nearest"), padding_mode="zeros", **kwargs))
    transforms += intensity_transforms(config, in_plane_only(config, dims, anisotropic))
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

"""Dimension-agnostic layers shared by the hand-written classic architectures (fcn, segnet, deeplabv3plus).

Everything takes per-axis kernel sizes, strides and dilations (lists, one value per spatial axis)
so that the plan's anisotropic layout (e.g. kernel ``[3, 3, 1]``, stride ``[2, 2, 1]``) carries
over unchanged. Conv blocks are conv -> norm (the config's instance or batch norm) -> LeakyReLU
(0.01, as in dynunet/nnU-Net) -> channel dropout (the config's ``dropout``, as MONAI's blocks).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from medseg.models.config import ModelConfig

Axes = Sequence[int]


def per_axis(value: int | Axes, dims: int) -> tuple[int, ...]:
    """``3`` -> ``(3, 3, 3)`` in 3D; a sequence is checked for length and returned as a tuple."""
    if isinstance(value, int):
        return (value,) * dims
    values = tuple(int(v) for v in value)
    if len(values) != dims:
        raise ValueError(f"{list(values)} must have one value per spatial axis ({dims})")
    return values


def conv_layer(dims: int, in_channels: int, out_channels: int, kernel: int | Axes = 3, *, stride: int | Axes = 1,
               dilation: int | Axes = 1, bias: bool = True) -> nn.Module:
    """``Conv{2,3}d`` with 'same' padding per axis (odd kernels), so only ``stride`` changes the size."""
    kernel, dilation = per_axis(kernel, dims), per_axis(dilation, dims)
    if any(k % 2 == 0 for k in kernel):
        raise ValueError(f"kernel {list(kernel)} must be odd along every axis")
    padding = tuple(d * (k // 2) for k, d in zip(kernel, dilation))
    conv = nn.Conv3d if dims == 3 else nn.Conv2d
    return conv(in_channels, out_channels, kernel, stride=per_axis(stride, dims), padding=padding, dilation=dilation, bias=bias)


def norm_layer(config: ModelConfig, dims: int, channels: int) -> nn.Module:
    """The config's norm: affine instance norm (nnU-Net) or batch norm."""
    if config.norm == "instance":
        return (nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d)(channels, affine=True)
    return (nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d)(channels)


def activation() -> nn.Module:
    return nn.LeakyReLU(negative_slope=0.01, inplace=True)


class ConvNormAct(nn.Sequential):
    """conv -> norm -> LeakyReLU -> channel dropout (only when ``dropout`` > 0)."""

    def __init__(self, config: ModelConfig, dims: int, in_channels: int, out_channels: int, kernel: int | Axes = 3, *,
                 stride: int | Axes = 1, dilation: int | Axes = 1, dropout: float | None = None):
        layers = [conv_layer(dims, in_channels, out_channels, kernel, stride=stride, dilation=dilation, bias=False),
                  norm_layer(config, dims, out_channels), activation()]
        p = config.dropout if dropout is None else dropout
        if p > 0:
            layers.append((nn.Dropout3d if dims == 3 else nn.Dropout2d)(p))
        super().__init__(*layers)


def max_pool(dims: int, kernel: Axes, *, return_indices: bool = False) -> nn.Module:
    """Non-overlapping max pooling with kernel = stride = the plan's per-axis stride (``[2, 2, 1]`` keeps z)."""
    pool = nn.MaxPool3d if dims == 3 else nn.MaxPool2d
    return pool(tuple(kernel), stride=tuple(kernel), return_indices=return_indices)


def interpolation_mode(dims: int) -> str:
    return "trilinear" if dims == 3 else "bilinear"


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Linear (bi/trilinear) resize of feature or score maps to ``size``; a no-op when already there."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return nn.functional.interpolate(x, size=tuple(size), mode=interpolation_mode(x.ndim - 2), align_corners=False)


def bilinear_kernel(kernel: Axes) -> torch.Tensor:
    """Separable (bi/tri)linear interpolation filter of the given per-axis kernel size (FCN's deconv initialisation)."""
    filt = torch.ones(())
    for k in kernel:
        factor = (k + 1) // 2
        center = factor - 1 if k % 2 == 1 else factor - 0.5
        axis = 1 - torch.abs(torch.arange(k, dtype=torch.float32) - center) / factor
        filt = filt.unsqueeze(-1) * axis
    return filt


class LearnedUpsample(nn.Module):
    """Transposed conv that multiplies each axis by its stride, initialised to linear interpolation (FCN).

    Kernel ``2s - s % 2`` with padding ``(k - s) // 2`` gives exactly ``size * s`` per axis and an overlap
    between neighbouring outputs (no checkerboard); stride 1 axes get kernel 1 (identity at init).
    """

    def __init__(self, dims: int, channels: int, stride: Axes):
        super().__init__()
        stride = per_axis(stride, dims)
        kernel = tuple(2 * s - s % 2 for s in stride)
        padding = tuple((k - s) // 2 for k, s in zip(kernel, stride))
        deconv = nn.ConvTranspose3d if dims == 3 else nn.ConvTranspose2d
        self.up = deconv(channels, channels, kernel, stride=stride, padding=padding, bias=False)
        with torch.no_grad():
            self.up.weight.zero_()
            filt = bilinear_kernel(kernel)
            for channel in range(channels):
                self.up.weight[channel, channel] = filt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


def cumulative_strides(strides: Sequence[Axes]) -> list[list[int]]:
    """Per stage, the total per-axis downsampling from the input (stage 0: all ones)."""
    dims = len(strides[0])
    return [[math.prod(s[axis] for s in strides[: stage + 1]) for axis in range(dims)] for stage in range(len(strides))]

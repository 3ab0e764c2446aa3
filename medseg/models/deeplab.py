"""``deeplabv3plus``: DeepLabV3+ (Chen, Zhu, Papandreou, Schroff, Adam, ECCV 2018) laid out from the plan.

**Encoder.** One residual stage per plan stage (two conv-norm-act with the plan's per-axis kernel,
projection shortcut when shape or width changes). The first ``keep`` stages downsample by the
plan's strides; later stages keep the resolution and dilate instead, each by the product of the
strides it skipped so far (per axis, so a skipped ``(2, 2, 1)`` dilates z by 1). ``keep`` is 3
(output stride 8 on isotropic plans) but at most ``n_stages - 2``, so at least one stage is
atrous, and at least 1 (a 2-stage plan has no atrous stage; only its ASPP is atrous).

**ASPP** at the output stride: a 1x1 branch, one 3-tap atrous branch per distinct rate tuple,
and an image-level branch, concatenated and projected by a 1x1 conv-norm-act (+ dropout).

**Atrous rates** (per axis, from patch and spacing). With the feature map's extent ``E_a =
patch_a / os_a`` voxels and its voxel size ``v_a = spacing_a * os_a`` mm: a 3-tap kernel at rate
``r`` spans ``2r + 1`` voxels, so ``r_max_a = max(1, (E_a - 1) // 2)`` keeps every tap of the
central voxel inside the map. The physical reach ``R = max_a(r_max_a * v_a)`` mm is split in
thirds: branch ``j`` (1, 2, 3) gets ``r_ja = clamp(round(j / 3 * R / v_a), 1, r_max_a)``. Thick
slices (large ``v_z``) thus get proportionally smaller z rates, and no rate outgrows its map.
On the paper's 513 crop at output stride 16 (33x33) this gives 5/11/16 against its 6/12/18.
Without a patch size, the map is assumed to be ``min_feature_size`` at the plan's total stride.

**Decoder** (V3+): low-level features of stage 1 (stage 0 when ``keep`` is 1) reduced by a 1x1
conv to ``3/16`` of the ASPP width (the paper's 48 of 256), concatenated with the interpolated
ASPP output, two conv-norm-act with that stage's kernel, a 1x1 classifier, and interpolation to
the input size.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

from medseg.models.blocks import ConvNormAct, activation, conv_layer, cumulative_strides, norm_layer, resize
from medseg.models.config import ModelConfig
from medseg.models.registry import register_model
from medseg.schema.plan import Topology

logger = logging.getLogger(__name__)

#: Downsampling steps kept before dilating (output stride 8 on an isotropic plan).
MAX_KEPT_DOWNSAMPLINGS = 3


class ResidualStage(nn.Module):
    """ResNet basic block: conv-norm-act, conv-norm, plus a (projected) shortcut, then activation."""

    def __init__(self, config: ModelConfig, dims: int, in_channels: int, out_channels: int, kernel: Sequence[int],
                 stride: Sequence[int], dilation: Sequence[int]):
        super().__init__()
        self.conv1 = ConvNormAct(config, dims, in_channels, out_channels, kernel, stride=stride, dilation=dilation)
        self.conv2 = nn.Sequential(conv_layer(dims, out_channels, out_channels, kernel, dilation=dilation, bias=False),
                                   norm_layer(config, dims, out_channels))
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels or any(s != 1 for s in stride):
            self.shortcut = nn.Sequential(conv_layer(dims, in_channels, out_channels, 1, stride=stride, bias=False),
                                          norm_layer(config, dims, out_channels))
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global average -> 1x1 conv -> activation -> broadcast back to the map.

    No normalisation here on purpose: the pooled map has one voxel per channel, where instance
    norm raises in training (and would output only its bias), and batch norm raises for batch
    size 1 (and is noisy for the small batches of 3D training). The conv has a bias instead.
    """

    def __init__(self, dims: int, in_channels: int, out_channels: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1) if dims == 3 else nn.AdaptiveAvgPool2d(1)
        self.conv = conv_layer(dims, in_channels, out_channels, 1, bias=True)
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Upsampling a single voxel is a broadcast (bilinear and nearest agree).
        return self.act(self.conv(self.pool(x))).expand(-1, -1, *x.shape[2:])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, atrous 3-tap branches at ``rates``, image pooling; 1x1 projection."""

    def __init__(self, config: ModelConfig, dims: int, in_channels: int, out_channels: int, kernel: Sequence[int],
                 rates: Sequence[Sequence[int]]):
        super().__init__()
        branches = [ConvNormAct(config, dims, in_channels, out_channels, 1, dropout=0.0)]
        branches += [ConvNormAct(config, dims, in_channels, out_channels, kernel, dilation=rate, dropout=0.0) for rate in rates]
        self.branches = nn.ModuleList(branches)
        self.image_pooling = ImagePooling(dims, in_channels, out_channels)
        self.project = ConvNormAct(config, dims, out_channels * (len(branches) + 1), out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [branch(x) for branch in self.branches] + [self.image_pooling(x)]
        return self.project(torch.cat(outputs, dim=1))


def kept_downsamplings(n_stages: int) -> int:
    """Downsampling steps before the encoder switches to dilation (see the module docstring)."""
    return max(1, min(MAX_KEPT_DOWNSAMPLINGS, n_stages - 2))


def atrous_rates(topology: Topology, keep: int, min_feature_size: int) -> tuple[list[int], list[tuple[int, ...]]]:
    """ASPP ``(kernel, rates)`` for a map at the output stride of ``keep`` downsamplings (module docstring rule)."""
    dims = topology.spatial_dims
    output_stride = cumulative_strides(topology.strides)[keep]
    if topology.patch_size is not None:
        extent = [size // s for size, s in zip(topology.patch_size, output_stride)]
    else:
        extent = [min_feature_size * d // s for d, s in zip(topology.divisor, output_stride)]
    spacing = topology.spacing or [1.0] * dims
    voxel = [sp * s for sp, s in zip(spacing, output_stride)]
    kernel = [k if e >= 3 else 1 for k, e in zip(topology.kernel_sizes[keep], extent)]
    r_max = [max(1, (e - 1) // 2) if k > 1 else 1 for e, k in zip(extent, kernel)]
    reach = max(r * v for r, v in zip(r_max, voxel))
    rates: list[tuple[int, ...]] = []
    for branch in (1, 2, 3):
        rate = tuple(min(max(1, round(branch / 3 * reach / v)), r) for v, r in zip(voxel, r_max))
        if rate not in rates:
            rates.append(rate)
    return kernel, rates


class DeepLabV3Plus(nn.Module):
    """Dilated residual encoder, ASPP at the output stride, V3+ decoder with low-level features."""

    def __init__(self, config: ModelConfig, topology: Topology, in_channels: int, out_channels: int):
        super().__init__()
        dims, features = topology.spatial_dims, topology.features
        #: The plan's per-stage strides: input sizes must be multiples of their product (read by the ONNX export).
        self.strides = [list(stride) for stride in topology.strides]
        self.keep = kept_downsamplings(topology.n_stages)
        self.stages = nn.ModuleList()
        channels, dilation = in_channels, [1] * dims
        for stage, (kernel, stride, width) in enumerate(zip(topology.kernel_sizes, topology.strides, features)):
            if stage > self.keep:  # atrous: keep the resolution, dilate by the skipped stride
                dilation, stride = [d * s for d, s in zip(dilation, stride)], [1] * dims
            self.stages.append(ResidualStage(config, dims, channels, width, kernel, stride, dilation))
            channels = width
        kernel, self.rates = atrous_rates(topology, self.keep, topology.min_feature_map_size)
        aspp_width = features[self.keep]
        self.aspp = ASPP(config, dims, channels, aspp_width, kernel, self.rates)
        self.low_stage = 1 if self.keep >= 2 else 0
        low_width = max(1, round(aspp_width * 3 / 16))
        # The paper's 256-wide decoder at stride 4 would cost 16x a U-Net stage there in 3D: cap at 2x the stage width.
        decoder_width = min(aspp_width, 2 * features[self.low_stage])
        low_kernel = topology.kernel_sizes[self.low_stage]
        self.reduce = ConvNormAct(config, dims, features[self.low_stage], low_width, 1, dropout=0.0)
        self.decoder = nn.Sequential(ConvNormAct(config, dims, aspp_width + low_width, decoder_width, low_kernel),
                                     ConvNormAct(config, dims, decoder_width, decoder_width, low_kernel))
        self.classifier = conv_layer(dims, decoder_width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        low = x
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index == self.low_stage:
                low = x
        low = self.reduce(low)
        x = resize(self.aspp(x), low.shape[2:])
        x = self.decoder(torch.cat([x, low], dim=1))
        return resize(self.classifier(x), size)


@register_model("deeplabv3plus", deep_supervision=False, encoder=("stages", "aspp"))
def build_deeplabv3plus(config: ModelConfig, in_channels: int, out_channels: int,
                        topology: Topology) -> DeepLabV3Plus:
    """DeepLabV3+ (Chen et al., ECCV 2018): dilated residual encoder, ASPP with image pooling, low-level decoder.

    The encoder stops downsampling after 3 of the plan's steps (output stride 8 when isotropic;
    fewer on shallow plans so that a stage is still atrous) and dilates later stages by the
    strides they skipped; ASPP fuses a 1x1, atrous and image-pooling branch; the V3+ decoder
    joins it with reduced early features. Adapted for medical volumes: 2D or 3D from the plan,
    per-axis kernels/strides/dilations (thick slices dilate z less), ASPP rates derived per axis
    from the patch extent and voxel spacing at the output stride instead of fixed 6/12/18, a
    norm-free image-pooling branch (safe for instance norm and batch size 1), widths from
    ``base_features``/``max_features``, decoder width capped for 3D cost. No deep supervision.
    """
    model = DeepLabV3Plus(config, topology, in_channels, out_channels)
    logger.info("deeplabv3plus: output stride %s, low-level stage %d, ASPP rates %s",
                cumulative_strides(topology.strides)[model.keep], model.low_stage, model.rates)
    return model

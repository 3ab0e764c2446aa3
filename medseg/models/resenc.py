"""``resenc_unet``: nnU-Net's residual-encoder U-Net (ResEnc; Isensee et al., "nnU-Net Revisited", MICCAI 2024).

nnU-Net's ``ResidualEncoderUNet`` laid out from the plan's topology, 2D or 3D:

* **stem**: one conv-norm-act at full resolution with the first stage's kernel and width;
* **encoder**: per stage, :data:`BLOCKS_PER_STAGE` residual basic blocks (1, 3, 4, 6, 6, 6, then 6s) of
  the stage's kernel and width. The first block of a stage down-samples with the plan's per-axis stride in
  its first convolution; its shortcut is ResNet-D's (average pooling by that stride, then a 1x1 conv-norm
  where the width changes) rather than a strided 1x1 conv, which would drop three of four voxels;
* **decoder**: plain, as nnU-Net's: per level a transposed conv (kernel = stride = the plan's stride), the
  skip concatenated, :data:`DECODER_CONVS_PER_STAGE` conv-norm-act with that stage's kernel;
* **deep supervision** as every registry entry: a 1x1 head per decoder level above the bottleneck, logits
  at native resolution, ``[full, down1, ...]`` in training.

Norm (instance by default, or batch), leaky ReLU (0.01) and dropout (in a block's first convolution only)
follow the config, as in medseg's other networks. Initialisation is nnU-Net's: He-normal (slope 0.01) for
every convolution, zero biases, and the last norm of each residual branch at zero, so every block starts as
its shortcut followed by the activation and the deep encoder trains stably from the first step.

The presets M / L / XL (:func:`resenc_preset`) share this network; they differ only in the GPU memory the
planner sizes the patch and batch for (nnU-Net's ``nnUNetPlannerResEnc{M,L,XL}``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from medseg.errors import ConfigError
from medseg.models.blocks import ConvNormAct, activation, conv_layer, norm_layer
from medseg.models.config import ModelConfig
from medseg.models.registry import deep_supervision_heads, register_model
from medseg.schema.plan import Topology

logger = logging.getLogger(__name__)

#: Residual blocks per encoder stage (nnU-Net's ResEnc presets, all three); a deeper plan repeats the last.
BLOCKS_PER_STAGE = (1, 3, 4, 6, 6, 6)
#: Conv-norm-act per decoder level (nnU-Net's ``n_conv_per_stage_decoder``).
DECODER_CONVS_PER_STAGE = 1
#: He initialisation's negative slope (the leaky ReLU's).
_HE_SLOPE = 1e-2


def blocks_per_stage(n_stages: int, blocks: Sequence[int] = BLOCKS_PER_STAGE) -> list[int]:
    """``blocks`` for ``n_stages`` stages: cut, or extended with its last entry (nnU-Net lists 6s up to 13 stages)."""
    return [blocks[min(stage, len(blocks) - 1)] for stage in range(n_stages)]


@dataclass(frozen=True)
class ResEncPreset:
    """One of nnU-Net's ResEnc presets: the same network, planned for another GPU memory."""

    name: str
    gpu_memory_gb: float  #: the planner's memory target (``plan.gpu_memory_gb``)
    gpus: str  #: cards nnU-Net names for it
    blocks_per_stage: tuple[int, ...] = BLOCKS_PER_STAGE
    decoder_convs_per_stage: int = DECODER_CONVS_PER_STAGE

    def encoder_convs(self, n_stages: int) -> list[int]:
        """Convolutions per encoder stage: two per block, plus the stem (stage 0) or the shortcut's 1x1 (later stages;
        counted also where a capped width leaves only the pooling, a small margin). What the planner's activation
        estimate would count in place of its uniform ``convs_per_stage``."""
        return [2 * blocks + 1 for blocks in blocks_per_stage(n_stages, self.blocks_per_stage)]


#: nnU-Net's presets. nnU-Net calibrated M so that it plans the same patches as its default U-Net at 8 GB (the
#: ResEnc M then uses ~9-11 GB); L and XL scale that reference with the memory (24 and 40 GB).
RESENC_PRESETS = {
    "M": ResEncPreset("M", 8.0, "RTX 2080 Ti, older Titans (9-11 GB)"),
    "L": ResEncPreset("L", 24.0, "RTX 4090, Titan RTX, Quadro 6000 (24 GB)"),
    "XL": ResEncPreset("XL", 40.0, "A100 40 GB, RTX 6000 Ada (40-48 GB)"),
}


def resenc_preset(name: str) -> ResEncPreset:
    """The preset ``name``: ``M``, ``L`` or ``XL`` (any case, ``ResEnc`` prefix allowed: ``resenc_l``, ``ResEncXL``)."""
    key = name.strip().upper().removeprefix("RESENC").lstrip("_- ")
    if key not in RESENC_PRESETS:
        raise ConfigError(f"unknown ResEnc preset '{name}'; available: {', '.join(RESENC_PRESETS)}")
    return RESENC_PRESETS[key]


def _pool(dims: int, stride: Sequence[int]) -> nn.Module:
    pool = nn.AvgPool3d if dims == 3 else nn.AvgPool2d
    return pool(tuple(stride), stride=tuple(stride))


class BasicBlockD(nn.Module):
    """ResNet-D basic block: conv-norm-act (strided), conv-norm, plus the shortcut; then the activation."""

    def __init__(self, config: ModelConfig, dims: int, in_channels: int, out_channels: int, kernel: Sequence[int], stride: Sequence[int]):
        super().__init__()
        self.conv1 = ConvNormAct(config, dims, in_channels, out_channels, kernel, stride=stride)
        self.conv2 = nn.Sequential(conv_layer(dims, out_channels, out_channels, kernel, bias=False), norm_layer(config, dims, out_channels))
        shortcut: list[nn.Module] = [_pool(dims, stride)] if any(s != 1 for s in stride) else []
        if in_channels != out_channels:
            shortcut += [conv_layer(dims, in_channels, out_channels, 1, bias=False), norm_layer(config, dims, out_channels)]
        self.shortcut = nn.Sequential(*shortcut) if shortcut else nn.Identity()
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResidualEncoderUNet(nn.Module):
    """Residual encoder, plain decoder, native-resolution deep-supervision heads (nnU-Net's ResEnc)."""

    def __init__(self, config: ModelConfig, topology: Topology, in_channels: int, out_channels: int, extra_outputs: int):
        super().__init__()
        dims, features, kernels = topology.spatial_dims, topology.features, topology.kernel_sizes
        #: The plan's per-stage strides: input sizes must be multiples of their product (read by the ONNX export).
        self.strides = [list(stride) for stride in topology.strides]
        self.blocks_per_stage = blocks_per_stage(topology.n_stages)
        self.stem = ConvNormAct(config, dims, in_channels, features[0], kernels[0])
        self.stages = nn.ModuleList()
        channels = features[0]
        for kernel, stride, width, blocks in zip(kernels, topology.strides, features, self.blocks_per_stage):
            self.stages.append(nn.Sequential(*(BasicBlockD(config, dims, channels if block == 0 else width, width, kernel,
                                                           stride if block == 0 else [1] * dims) for block in range(blocks))))
            channels = width
        # Decoder levels coarsest first; upsamples before decoders and heads so that "every parameter before the first
        # upsampling" is exactly the encoder (stem, stages).
        deconv = nn.ConvTranspose3d if dims == 3 else nn.ConvTranspose2d
        levels = range(topology.n_stages - 2, -1, -1)  # the skip stage each level merges
        self.upsamples = nn.ModuleList(deconv(features[s + 1], features[s], self.strides[s + 1], stride=self.strides[s + 1]) for s in levels)
        self.decoders = nn.ModuleList(
            nn.Sequential(*(ConvNormAct(config, dims, 2 * features[s] if conv == 0 else features[s], features[s], kernels[s])
                            for conv in range(DECODER_CONVS_PER_STAGE))) for s in levels)
        #: heads[i] scores the decoder output of stage i (0 = full resolution); only as many as deep supervision uses.
        self.heads = nn.ModuleList(conv_layer(dims, features[s], out_channels, 1) for s in range(1 + extra_outputs))
        self.apply(_he_init)
        for module in self.modules():
            if isinstance(module, BasicBlockD):
                nn.init.zeros_(module.conv2[1].weight)
                nn.init.zeros_(module.conv2[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips: list[torch.Tensor] = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        outputs: list[torch.Tensor] = []
        for level, (upsample, decoder) in enumerate(zip(self.upsamples, self.decoders)):
            skip = len(self.decoders) - 1 - level  # the stage this level merges and ends at
            x = decoder(torch.cat((upsample(x), skips[skip]), dim=1))
            if skip < len(self.heads) and (self.training or skip == 0):
                outputs.append(self.heads[skip](x))
        return outputs[::-1] if self.training and len(outputs) > 1 else outputs[-1]


def _he_init(module: nn.Module) -> None:
    """nnU-Net's ``InitWeights_He(1e-2)``: He-normal convolution weights, zero biases."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=_HE_SLOPE)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


@register_model("resenc_unet", deep_supervision=True, encoder=("stem", "stages"))
def build_resenc_unet(config: ModelConfig, in_channels: int, out_channels: int, topology: Topology) -> ResidualEncoderUNet:
    """nnU-Net ResEnc U-Net (Isensee et al., MICCAI 2024): residual encoder (1,3,4,6,6,6 blocks), plain decoder, deep supervision.

    nnU-Net's ``ResidualEncoderUNet`` (its ResEnc M/L/XL presets share it; they differ in the GPU memory the
    planner sizes for, see :func:`resenc_preset`), laid out from the plan: the plan's per-axis kernels, strides
    and widths, ResNet-D basic blocks, one conv-norm-act per decoder level, the config's norm and dropout.
    """
    extra = deep_supervision_heads(config, topology.n_stages - 2, f"a {topology.n_stages}-stage network")
    model = ResidualEncoderUNet(config, topology, in_channels, out_channels, extra)
    logger.debug("resenc_unet: %d stages, blocks %s, strides %s", topology.n_stages, model.blocks_per_stage, topology.strides)
    return model

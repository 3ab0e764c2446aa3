"""``segnet``: SegNet (Badrinarayanan, Kendall, Cipolla, TPAMI 2017) laid out from the plan.

Encoder stage ``i``: max-pool with kernel = stride = the plan's per-axis stride into that stage
(``(2, 2, 1)`` keeps thick slices), keeping the argmax indices, then two conv-norm-act with the
plan's kernels and width ``features[i]``. The decoder mirrors it: at each resolution two
conv-norm-act, the second one reducing to the width the encoder had *before* pooling into that
resolution, then ``MaxUnpool`` with the stored indices (sparse upsampling: each value goes back
to where its maximum came from, zeros elsewhere). No skip concatenation, only the indices cross
from encoder to decoder. A 1x1 conv classifier at full resolution gives the logits.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from medseg.models.blocks import ConvNormAct, conv_layer, max_pool
from medseg.models.config import ModelConfig
from medseg.models.registry import register_model
from medseg.schema.plan import Topology

logger = logging.getLogger(__name__)


class SegNet(nn.Module):
    """Encoder-decoder upsampling with the encoder's max-pooling indices."""

    def __init__(self, config: ModelConfig, topology: Topology, in_channels: int, out_channels: int):
        super().__init__()
        dims, features = topology.spatial_dims, topology.features
        #: The plan's per-stage strides: input sizes must be multiples of their product (read by the ONNX export).
        self.strides = [list(stride) for stride in topology.strides]
        unpool = nn.MaxUnpool3d if dims == 3 else nn.MaxUnpool2d
        self.pools = nn.ModuleList(max_pool(dims, stride, return_indices=True) for stride in topology.strides[1:])
        self.unpools = nn.ModuleList(unpool(tuple(stride), stride=tuple(stride)) for stride in topology.strides[1:])
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        channels = in_channels
        for stage, (kernel, width) in enumerate(zip(topology.kernel_sizes, features)):
            self.encoders.append(nn.Sequential(ConvNormAct(config, dims, channels, width, kernel),
                                               ConvNormAct(config, dims, width, width, kernel)))
            # Decoder at this resolution ends with the channel count the unpooling indices were taken at.
            target = features[stage - 1] if stage > 0 else width
            self.decoders.append(nn.Sequential(ConvNormAct(config, dims, width, width, kernel),
                                               ConvNormAct(config, dims, width, target, kernel)))
            channels = width
        self.classifier = conv_layer(dims, features[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        indices: list[torch.Tensor] = []
        sizes: list[torch.Size] = []
        x = self.encoders[0](x)
        for pool, encoder in zip(self.pools, self.encoders[1:]):
            sizes.append(x.shape[2:])
            x, index = pool(x)
            indices.append(index)
            x = encoder(x)
        for stage in range(len(self.encoders) - 1, 0, -1):
            x = self.decoders[stage](x)
            x = self.unpools[stage - 1](x, indices[stage - 1], output_size=sizes[stage - 1])
        return self.classifier(self.decoders[0](x))


@register_model("segnet", deep_supervision=False, encoder=("encoders",))
def build_segnet(config: ModelConfig, in_channels: int, out_channels: int, topology: Topology) -> SegNet:
    """SegNet (Badrinarayanan et al., TPAMI 2017): encoder-decoder unpooling with max-pool indices; no skips.

    A symmetric conv encoder-decoder where each decoder stage upsamples with ``MaxUnpool`` at the
    positions its encoder stage's max pooling picked, instead of concatenating encoder features.
    Adapted for medical volumes: 2D or 3D from the plan, the pooling kernels are the plan's
    per-axis strides (``(2, 2, 1)`` on thick slices, so z is pooled less), per-axis conv kernels
    and stage count follow the plan instead of VGG-16's 13 layers, widths follow
    ``base_features``/``max_features``, norm (instance or batch) and dropout from the config.
    No deep supervision.
    """
    logger.debug("segnet: %d stages, pooling kernels %s", topology.n_stages, topology.strides[1:])
    return SegNet(config, topology, in_channels, out_channels)

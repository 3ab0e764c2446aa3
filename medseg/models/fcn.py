"""``fcn``: FCN-8s-style fully convolutional network (Long, Shelhamer, Darrell, CVPR 2015) laid out from the plan.

Encoder: one VGG-like stage per plan stage (max-pool by the plan's per-axis stride, then two
conv-norm-act with the plan's per-axis kernels and widths), followed by the fc6/fc7 analogue
(a conv with the bottleneck kernel and a 1x1 conv) at the coarsest resolution. Score layers (1x1
conv to class scores) sit at the last three stages (FCN-8s: pool3, pool4, fc7), or at every
stage if the plan has fewer. Coarse scores are upsampled by a *learned* transposed conv
initialised to bilinear/trilinear interpolation (the paper's 2x "upscore" layers), exactly by
that stage's per-axis stride, and summed with the next finer score. The final upsampling of
the finest fused score to the input size is plain bilinear/trilinear interpolation: the paper
fixes that deconvolution to bilinear weights, so interpolation is the same operation without
parameters and works for any per-axis factor (anisotropic plans).

Deep supervision: in training the fused score maps at the coarser score stages (the FCN-16s and
FCN-32s predictions of the paper's staged training) come back at their native resolution after
the full-resolution output, ``[full, fused_16s, score_32s]``.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from medseg.models.blocks import ConvNormAct, LearnedUpsample, conv_layer, max_pool, resize
from medseg.models.config import ModelConfig
from medseg.models.registry import deep_supervision_heads, register_model
from medseg.schema.plan import Topology

logger = logging.getLogger(__name__)

#: FCN-8s scores the last three resolutions (pool3, pool4, fc7).
SCORED_STAGES = 3


class FCN(nn.Module):
    """VGG-like encoder with class scores fused from coarse to fine (FCN-8s skip architecture)."""

    def __init__(self, config: ModelConfig, topology: Topology, in_channels: int, out_channels: int, extra_outputs: int):
        super().__init__()
        dims, features = topology.spatial_dims, topology.features
        #: The plan's per-stage strides: input sizes must be multiples of their product (read by the ONNX export).
        self.strides = [list(stride) for stride in topology.strides]
        self.stages = nn.ModuleList()
        channels = in_channels
        for stage, (kernel, stride, width) in enumerate(zip(topology.kernel_sizes, topology.strides, features)):
            layers: list[nn.Module] = [] if stage == 0 else [max_pool(dims, stride)]
            layers += [ConvNormAct(config, dims, channels, width, kernel), ConvNormAct(config, dims, width, width, kernel)]
            self.stages.append(nn.Sequential(*layers))
            channels = width
        # fc6 / fc7 of VGG as convolutions (the paper's 7x7/4096 scaled to the plan's kernel and width).
        self.head = nn.Sequential(ConvNormAct(config, dims, channels, channels, topology.kernel_sizes[-1]),
                                  ConvNormAct(config, dims, channels, channels, 1))
        n_stages = topology.n_stages
        #: Stage indices carrying a score layer, finest first.
        self.scored = list(range(max(n_stages - SCORED_STAGES, 0), n_stages))
        # upsamples[j] brings the fused score of scored[j + 1] to the resolution of scored[j]. Registered before the
        # score layers so that "every parameter before the first upsampling" is exactly the encoder (stages, head).
        self.upsamples = nn.ModuleList(LearnedUpsample(dims, out_channels, topology.strides[stage]) for stage in self.scored[1:])
        self.scores = nn.ModuleList(conv_layer(dims, features[stage], out_channels, 1) for stage in self.scored)
        self.extra_outputs = extra_outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        size = x.shape[2:]
        skips: list[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        score = self.scores[-1](self.head(x))
        fused = [score]  # coarsest first
        for j in range(len(self.scored) - 2, -1, -1):
            score = self.upsamples[j](score) + self.scores[j](skips[self.scored[j]])
            fused.append(score)
        out = resize(score, size)
        if self.training and self.extra_outputs:
            coarser = fused[::-1][1:]  # finest fused map is ``out`` itself; the rest, finer to coarser
            return [out, *coarser[: self.extra_outputs]]
        return out


def _extra_outputs(config: ModelConfig, n_scored: int) -> int:
    return deep_supervision_heads(config, n_scored - 1, "fcn: the coarser score maps")


@register_model("fcn", deep_supervision=True, encoder=("stages", "head"))
def build_fcn(config: ModelConfig, in_channels: int, out_channels: int, topology: Topology) -> FCN:
    """FCN-8s (Long et al., CVPR 2015): VGG-like encoder, 1x1 scores at the last 3 stages fused coarse to fine.

    A fully convolutional network whose class scores from the three coarsest resolutions are
    upsampled (learned transposed conv initialised to linear interpolation) and summed, then
    interpolated to the input size. Adapted for medical volumes: stages, per-axis kernels and
    pooling strides come from the plan (thick slices are pooled and convolved in-plane first),
    widths follow ``base_features``/``max_features`` instead of VGG-16's, every conv has the
    config's norm (no ImageNet pre-training to lean on) and dropout, 2D and 3D alike; deep
    supervision returns the coarser FCN-16s/32s score maps at their native resolution.
    """
    n_scored = min(SCORED_STAGES, topology.n_stages)
    model = FCN(config, topology, in_channels, out_channels, _extra_outputs(config, n_scored))
    logger.debug("fcn: %d stages, strides %s, scored stages %s", topology.n_stages, topology.strides, model.scored)
    return model

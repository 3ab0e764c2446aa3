"""``lesion_instances``: dynunet plus a lesion-centre (objectness) head, for lesions as scored instances.

Design, after Retina U-Net (Jaeger et al. 2018: keep the full semantic U-Net and its segmentation
supervision, add a light detection head on the decoder) but with the head of CenterNet ("objects as
points", Zhou et al. 2019) instead of Retina U-Net's anchor boxes: one extra output channel on the
decoder's **full-resolution** features predicts, per voxel, how likely that voxel is the centre of a
lesion. Anchors would need per-level box regression, box matching, NMS and anchor sizes tuned to the
lesions; a centre heatmap needs none of that, is defined at any voxel size in 2D and 3D, and its
instances come from the semantic mask the U-Net already produces. What the head adds is the
*confidence*: a lesion the network is sure of has a centre peak near 1, a speck of doubtful
foreground has none (see :mod:`medseg.losses.objectness` for the target and loss, and
:mod:`medseg.infer.instances` for the per-lesion confidence = the peak of the head inside the lesion).

Layout: decoder full-resolution features ``F`` (``features[0]`` channels) -> head = conv (the first
stage's kernel) -> norm -> LeakyReLU -> 1x1 conv -> objectness logit ``o``; the semantic output block
is a 1x1 conv over ``concat(F, sigmoid(o))``, so the segmentation head also sees where the detector
puts lesion centres. That coupling is deliberate and has a second purpose: every parameter, the head's
included, is reached from the registry's standard output, so the model contract holds unchanged (the
same output convention, every parameter gets a gradient from the semantic logits) and DDP needs no
``find_unused_parameters`` when the objectness term is off.

Outputs: ``model(x)`` follows the registry convention (semantic logits, or the deep-supervision list in
training); ``model(x, objectness=True)`` returns :class:`InstanceOutput` ``(semantic, objectness)``
with the objectness logits ``(B, 1, *spatial)``. Training asks for the latter when the loss has an
objectness term (:mod:`medseg.train.trainer`); inference wraps the network in :class:`ObjectnessChannel`
(one tensor, the logit as an extra last channel), which ``torch.compile`` and the sliding window take
like any network.
"""

from __future__ import annotations

import logging
import math
from typing import Any, NamedTuple

import torch
from monai.networks.blocks.dynunet_block import UnetOutBlock
from monai.networks.nets import DynUNet
from torch import nn

from medseg.models.blocks import ConvNormAct
from medseg.models.config import ModelConfig
from medseg.models.dynunet import DynUNetDS, dynunet_arguments
from medseg.models.registry import register_model
from medseg.schema.plan import Topology

log = logging.getLogger(__name__)

#: Initial objectness probability everywhere (RetinaNet's prior): the head starts by calling nothing a
#: lesion centre, so the focal loss of the many background voxels starts small and stable.
PRIOR_PROBABILITY = 0.01


class InstanceOutput(NamedTuple):
    """What ``model(x, objectness=True)`` returns: the usual semantic output and the objectness logits."""

    semantic: torch.Tensor | list[torch.Tensor]
    objectness: torch.Tensor


class ObjectnessHead(nn.Sequential):
    """conv -> norm -> LeakyReLU -> 1x1 conv to one logit per voxel, biased to :data:`PRIOR_PROBABILITY`."""

    def __init__(self, config: ModelConfig, dims: int, channels: int, kernel: list[int]):
        final = (nn.Conv3d if dims == 3 else nn.Conv2d)(channels, 1, kernel_size=1)
        super().__init__(ConvNormAct(config, dims, channels, channels, kernel), final)
        nn.init.normal_(final.weight, std=0.01)
        nn.init.constant_(final.bias, -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY))


class LesionInstanceUNet(DynUNetDS):
    """dynunet whose semantic output block also reads a lesion-centre heatmap predicted from the same features."""

    def __init__(self, config: ModelConfig, **arguments: Any):
        super().__init__(**arguments)
        dims, width = self.spatial_dims, self.filters[0]
        self.objectness_head = ObjectnessHead(config, dims, width, list(self.kernel_size[0]))
        self.output_block = UnetOutBlock(dims, width + 1, self.out_channels, dropout=self.dropout)
        self.output_block.apply(DynUNet.initialize_weights)  # as DynUNet initialises its own layers

    def forward(self, x: torch.Tensor, objectness: bool = False) -> torch.Tensor | list[torch.Tensor] | InstanceOutput:
        features = self.skip_layers(x)
        logit = self.objectness_head(features)
        out = self.output_block(torch.cat([features, torch.sigmoid(logit).to(features.dtype)], dim=1))
        semantic: torch.Tensor | list[torch.Tensor] = out
        if self.deep_supervision:
            heads = list(self.heads)
            for index in range(len(self.heads)):  # as DynUNetDS: free the last batch's graph
                self.heads[index] = torch.empty(0)
            semantic = [out, *heads] if self.training else out
        return InstanceOutput(semantic, logit) if objectness else semantic


class ObjectnessChannel(nn.Module):
    """Inference view of a :class:`LesionInstanceUNet`: ``(B, classes + 1, *spatial)``, the objectness logit last."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.network(x, objectness=True)
        return torch.cat([output.semantic, output.objectness.to(output.semantic.dtype)], dim=1)


def has_objectness(network: nn.Module) -> bool:
    """True for networks with a lesion-centre head (they accept ``objectness=True``): a :class:`LesionInstanceUNet`, or a
    stand-in that says so with ``accepts_objectness`` (an exported one in ONNX Runtime, :mod:`medseg.export.onnx_runtime`)."""
    network = getattr(network, "_orig_mod", network)
    return isinstance(network, LesionInstanceUNet) or getattr(network, "accepts_objectness", False) is True


@register_model("lesion_instances", deep_supervision=True, encoder=("input_block", "downsamples", "bottleneck"))
def build_lesion_instances(
    config: ModelConfig, in_channels: int, out_channels: int, topology: Topology
) -> LesionInstanceUNet:
    """dynunet plus a CenterNet-style lesion-centre head (Retina U-Net idea): lesions as instances with a confidence.

    The head (conv-norm-act + 1x1 conv, one logit per voxel) sits on the decoder's full-resolution
    features; training adds the objectness focal term (``loss.objectness``) and `medseg infer` writes
    ``<case>_instances.nii.gz`` and ``<case>_lesions.json`` with each lesion's peak head probability as
    its confidence. Topology, deep supervision and everything else as dynunet.
    """
    arguments = dynunet_arguments(config, in_channels, out_channels, topology, name="lesion_instances")
    return LesionInstanceUNet(config, **arguments)

"""``dynunet_midfusion``: a dynunet whose first encoder stages are separate per input channel (modality), merged by a
mean over the modalities that are present (HeMIS-style mid fusion; Havaei et al., MICCAI 2016).

Early fusion (every other entry) stacks the modalities as input channels of the first convolution, so a missing
modality is a channel of zeros the network has to cope with. Here each modality ``m`` has its own *stem*: the first
``model.fusion_stages`` stages of the plan's topology (same per-axis kernels, strides and widths as dynunet's), fed
with that channel alone. At each stem stage the features of the modalities are merged by their **mean over the
available modalities**; the merged map is the skip connection of that level, and the last merged map feeds the
shared encoder stages (down to the bottleneck, always shared) and the usual dynunet decoder (transposed convolution,
concatenated skip, two convs per level; deep-supervision heads at native resolution, the registry's list convention).

Why the mean and not concatenation + 1x1 conv: a mean of the available modalities has the same scale and the same
meaning whichever subset is present, so a missing modality is simply left out of the average; a concatenation has a
fixed slot per modality that must be filled with something (zeros) the following conv then mixes in. The price is
that the merge cannot weight modalities differently per feature (the stems can learn that instead).

**Which modality is missing.** :meth:`MidFusionDynUNet.forward` takes an optional availability mask ``(B, C)``
(1 = present). Without one (how training, sliding-window inference and ONNX call it) a channel that is exactly zero
over the whole input window of a sample counts as missing: that is what ``augment.modality_dropout_prob`` and
``infer.missing_channels`` write (0 = the channel mean after z-score normalisation). A sample with no nonzero channel
at all (a window of pure background outside a nonzero-mask-normalised brain) counts every modality as present, so
the mean is always over at least one modality. A *real* modality is exactly zero over a whole window only outside
such a mask, where every channel is.

Cost: the stem stages run once per modality (``C`` times dynunet's compute and parameters for those stages).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetOutBlock, UnetResBlock, UnetUpBlock
from torch import nn

from medseg.errors import ConfigError
from medseg.models.config import ModelConfig
from medseg.models.registry import deep_supervision_heads, monai_norm, register_model
from medseg.schema.plan import Topology

logger = logging.getLogger(__name__)

ACTIVATION = ("leakyrelu", {"inplace": True, "negative_slope": 0.01})


def channel_availability(x: torch.Tensor) -> torch.Tensor:
    """``(B, C)`` float mask: 1 where channel ``c`` of sample ``b`` has a nonzero voxel; a sample with none is all ones."""
    present = x.detach().flatten(2).abs().amax(dim=2) > 0
    nothing = ~present.any(dim=1, keepdim=True)
    return (present | nothing).to(x.dtype)


def masked_mean(features: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """Mean of per-modality feature maps ``(B, F, *S)`` weighted by ``weights`` ``(B, C)`` (0 = left out)."""
    stacked = torch.stack(list(features), dim=1)
    w = weights.to(stacked.dtype).reshape(*weights.shape, *([1] * (stacked.ndim - 2)))
    return (stacked * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


class MidFusionDynUNet(nn.Module):
    """Per-modality stems (mean-merged at every stem stage), shared encoder stages and a dynunet decoder."""

    def __init__(self, config: ModelConfig, topology: Topology, in_channels: int, out_channels: int,
                 fusion_stages: int, deep_supr_num: int) -> None:
        super().__init__()
        dims, kernels, strides, features = topology.spatial_dims, topology.kernel_sizes, topology.strides, topology.features
        self.in_channels, self.fusion_stages, self.deep_supr_num = in_channels, fusion_stages, deep_supr_num
        #: The plan's per-stage strides: input sizes must be multiples of their product (read by the ONNX export).
        self.strides = [list(stride) for stride in strides]
        block = UnetResBlock if config.res_block else UnetBasicBlock
        options: dict[str, Any] = {"norm_name": monai_norm(config), "act_name": ACTIVATION, "dropout": config.dropout or None}

        def stage(index: int, channels_in: int) -> nn.Module:
            return block(dims, channels_in, features[index], kernels[index], strides[index], **options)

        self.stems = nn.ModuleList(
            nn.ModuleList(stage(index, 1 if index == 0 else features[index - 1]) for index in range(fusion_stages))
            for _ in range(in_channels)
        )
        self.encoder_stages = nn.ModuleList(stage(index, features[index - 1]) for index in range(fusion_stages, topology.n_stages))
        # Decoder, coarsest level first: level L upsamples stage L+1's output to stage L and concatenates its skip.
        levels = range(topology.n_stages - 2, -1, -1)
        self.upsamples = nn.ModuleList(
            UnetUpBlock(dims, features[level + 1], features[level], kernels[level + 1], strides[level + 1], strides[level + 1], **options)
            for level in levels
        )
        self.output_block = UnetOutBlock(dims, features[0], out_channels, dropout=options["dropout"])
        self.heads = nn.ModuleList(UnetOutBlock(dims, features[level], out_channels) for level in range(1, deep_supr_num + 1))

    def encode(self, x: torch.Tensor, available: torch.Tensor) -> list[torch.Tensor]:
        """The skip features of every stage (merged for the stem stages), the bottleneck's last."""
        per_modality = [x[:, index : index + 1] for index in range(self.in_channels)]
        skips: list[torch.Tensor] = []
        for index in range(self.fusion_stages):
            per_modality = [stem[index](features) for stem, features in zip(self.stems, per_modality)]
            skips.append(masked_mean(per_modality, available))
        features = skips[-1]
        for stage in self.encoder_stages:
            features = stage(features)
            skips.append(features)
        return skips

    def forward(self, x: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor | list[torch.Tensor]:
        """Logits ``(B, classes, *S)``; in training with deep supervision ``[full, down1, ...]`` at native resolution.

        ``available``: ``(B, C)`` with 1 for the modalities to use; None = every channel that is not all zero.
        """
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channel(s), got {x.shape[1]}")
        weights = channel_availability(x) if available is None else available.to(x.dtype)
        skips = self.encode(x, weights)
        features = skips[-1]
        decoded: list[torch.Tensor] = []  # finest last
        for upsample, skip in zip(self.upsamples, reversed(skips[:-1])):
            features = upsample(features, skip)
            decoded.append(features)
        out = self.output_block(features)
        if not (self.training and self.heads):
            return out
        finer_first = decoded[::-1]  # decoded level L output at index L
        return [out, *(head(finer_first[level]) for level, head in enumerate(self.heads, start=1))]


def _fusion_stages(config: ModelConfig, n_stages: int) -> int:
    wanted = config.fusion_stages
    if wanted > n_stages - 1:
        logger.info("dynunet_midfusion: fusion_stages %d clipped to %d (the bottleneck is shared)", wanted, n_stages - 1)
    return min(wanted, n_stages - 1)


def _deep_supr_num(config: ModelConfig, n_stages: int) -> int:
    return deep_supervision_heads(config, n_stages - 2, f"a {n_stages}-stage network")


@register_model("dynunet_midfusion", deep_supervision=True, encoder=("stems", "encoder_stages"))
def build_midfusion(
    config: ModelConfig, in_channels: int, out_channels: int, topology: Topology
) -> MidFusionDynUNet:
    """dynunet with per-modality encoder stems mean-merged over the present modalities (mid fusion, HeMIS-style).

    Each input channel gets its own first ``model.fusion_stages`` dynunet stages; their features are averaged
    over the modalities present in each sample (an all-zero channel counts as missing) and feed shared encoder
    stages, the bottleneck and a dynunet decoder with the merged maps as skips. Kernels, strides and widths
    come from the plan, 2D and 3D; deep supervision as dynunet's.
    """
    if topology.n_stages < 3:
        raise ConfigError(
            f"dynunet_midfusion needs at least 3 stages (2 downsamplings); the plan gives strides {topology.strides} "
            f"- use a larger patch_size or smaller model.min_feature_map_size"
        )
    if in_channels == 1:
        logger.info("dynunet_midfusion with one input channel is dynunet with extra bookkeeping: nothing to fuse")
    fusion = _fusion_stages(config, topology.n_stages)
    model = MidFusionDynUNet(config, topology, in_channels, out_channels, fusion, _deep_supr_num(config, topology.n_stages))
    logger.debug("dynunet_midfusion: %d stages, %d per modality (x%d), strides %s", topology.n_stages, fusion, in_channels, topology.strides)
    return model

"""``dynunet``: nnU-Net's dynamic U-Net (MONAI ``DynUNet``) laid out from the plan.

MONAI's DynUNet upsamples its deep-supervision heads to full resolution and stacks them; nnU-Net
instead scores each head against a downsampled target, which is cheaper and what its loss
weights were tuned for. :class:`DynUNetDS` keeps the heads at their native resolution and returns
the registry's list convention ``[full, down1, ...]`` in training mode.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from monai.networks.nets import DynUNet

from medseg.errors import ConfigError
from medseg.models.config import ModelConfig
from medseg.models.registry import deep_supervision_heads, monai_norm, register_model
from medseg.schema.plan import Topology

logger = logging.getLogger(__name__)


class DynUNetDS(DynUNet):
    """DynUNet whose training-mode output is a list of native-resolution logits, finest first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        out = self.output_block(self.skip_layers(x))
        if not self.deep_supervision:
            return out
        heads = list(self.heads)
        # The skip layers write into this shared list; drop the references so the autograd graph
        # of the last batch is not kept alive until the next forward.
        for index in range(len(self.heads)):
            self.heads[index] = torch.empty(0)
        return [out, *heads] if self.training else out


def _deep_supr_num(config: ModelConfig, n_stages: int) -> int:
    """Requested number of extra heads, clipped to the decoder levels between full res and bottleneck (ignores
    ``deep_supervision``: the caller turns the heads off)."""
    return deep_supervision_heads(config.model_copy(update={"deep_supervision": True}), n_stages - 2, f"a {n_stages}-stage network")


@register_model("dynunet", deep_supervision=True, encoder=("input_block", "downsamples", "bottleneck"))
def build_dynunet(
    config: ModelConfig, in_channels: int, out_channels: int, topology: Topology
) -> DynUNetDS:
    """nnU-Net's self-configuring U-Net: per-stage kernels/strides from spacing and patch, deep supervision."""
    return DynUNetDS(**dynunet_arguments(config, in_channels, out_channels, topology))


def dynunet_arguments(
    config: ModelConfig, in_channels: int, out_channels: int, topology: Topology, name: str = "dynunet"
) -> dict[str, Any]:
    """The ``DynUNet`` constructor arguments of the plan's topology (shared with entries built on dynunet)."""
    if topology.n_stages < 3:
        raise ConfigError(
            f"{name} needs at least 3 stages (2 downsamplings); the plan gives strides {topology.strides} "
            f"- use a larger patch_size or smaller model.min_feature_map_size"
        )
    deep_supr_num = _deep_supr_num(config, topology.n_stages)
    return dict(
        spatial_dims=topology.spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=topology.kernel_sizes,
        strides=topology.strides,
        upsample_kernel_size=topology.strides[1:],
        filters=topology.features,
        dropout=config.dropout or None,
        norm_name=monai_norm(config),
        act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        deep_supervision=config.deep_supervision and deep_supr_num >= 1,
        deep_supr_num=max(deep_supr_num, 1),
        res_block=config.res_block,
    )

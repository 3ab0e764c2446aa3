"""``segresnet``: MONAI SegResNetDS (Auto3DSeg's default), residual encoder with deep supervision.

It does not take per-stage strides; given the plan spacing it pools anisotropic axes later by its
own rule, so we pick the deepest stage count (up to the plan's) whose total stride divides the patch.
Widths double per stage from the first stage's width without any cap; ``dropout`` and
``res_block`` do not apply.
"""

from __future__ import annotations

import logging
import math

from monai.networks.nets import SegResNetDS
from monai.networks.nets.segresnet_ds import scales_for_resolution

from medseg.models.config import ModelConfig
from medseg.models.registry import deep_supervision_heads, monai_norm, register_model
from medseg.schema.plan import Topology

logger = logging.getLogger(__name__)

#: Residual blocks per encoder level (Auto3DSeg's layout), extended with 4s for deeper plans.
_BLOCKS_DOWN = (1, 2, 2, 4)


def _divisor(n_stages: int, resolution: list[float] | None, dims: int) -> list[int]:
    if resolution is None:
        return [2 ** (n_stages - 1)] * dims
    scales = scales_for_resolution(resolution, n_stages=n_stages)[:-1]
    return [math.prod(int(scale[axis]) for scale in scales) for axis in range(dims)]


@register_model("segresnet", deep_supervision=True, encoder=("encoder",))
def build_segresnet(
    config: ModelConfig, in_channels: int, out_channels: int, topology: Topology
) -> SegResNetDS:
    """MONAI SegResNetDS (Auto3DSeg): residual encoder, light decoder, deep supervision; spacing-aware pooling."""
    resolution = topology.spacing
    n_stages = topology.n_stages
    if topology.patch_size is not None:
        while n_stages > 1 and any(
            size % d for size, d in zip(topology.patch_size, _divisor(n_stages, resolution, topology.spatial_dims))
        ):
            n_stages -= 1
        if n_stages < topology.n_stages:
            logger.info("segresnet uses %d stages so that patch %s divides evenly", n_stages, topology.patch_size)
    blocks_down = tuple(_BLOCKS_DOWN[:n_stages]) + (4,) * max(0, n_stages - len(_BLOCKS_DOWN))
    dsdepth = 1 + deep_supervision_heads(config, n_stages - 2, f"segresnet with {n_stages} stages")  # heads between full resolution and bottleneck
    return SegResNetDS(
        spatial_dims=topology.spatial_dims,
        init_filters=topology.features[0],
        in_channels=in_channels,
        out_channels=out_channels,
        norm=monai_norm(config),
        blocks_down=blocks_down,
        dsdepth=dsdepth,
        resolution=tuple(resolution) if resolution is not None else None,
    )

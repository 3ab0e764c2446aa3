"""``unet``: MONAI's residual U-Net, a small fast baseline without deep supervision.

It follows the same plan (stage count, per-stage strides and widths) as ``dynunet`` but uses
3-kernels everywhere and residual units, so it is a quick sanity check against the nnU-Net layout.
"""

from __future__ import annotations

from monai.networks.nets import UNet

from medseg.models.config import ModelConfig
from medseg.models.registry import monai_norm, register_model
from medseg.schema.plan import Topology


@register_model("unet", deep_supervision=False)
def build_unet(
    config: ModelConfig, in_channels: int, out_channels: int, topology: Topology
) -> UNet:
    """MONAI residual U-Net (3-kernels, plan strides): small, fast baseline; no deep supervision."""
    return UNet(
        spatial_dims=topology.spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=topology.features,
        strides=[tuple(stride) for stride in topology.strides[1:]],
        kernel_size=3,
        up_kernel_size=3,
        num_res_units=config.unet_res_units,
        norm=monai_norm(config),
        dropout=config.dropout,
    )

"""``model:`` config section: which registered network and how wide/deep it is.

The layout (kernels, strides, patch) comes from the plan configuration; these fields only say
how to turn it into a network. Kept free of torch imports so configs load fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medseg.config import Section


class ModelConfig(Section):
    """Network choice and width; see ``medseg.models.available_models()`` for ``name``."""

    name: str = Field("dynunet", description="registered architecture: dynunet, lesion_instances (dynunet + lesion-centre head), unet, segresnet, fcn, segnet, deeplabv3plus, dynunet_midfusion (one encoder stem per input channel)")
    norm: Literal["instance", "batch"] = Field(
        "instance", description="instance norm (nnU-Net default, batch-size independent) or batch norm"
    )
    base_features: int | None = Field(
        None,
        ge=1,
        description="channels of the full-resolution stage, doubling per stage; None = the plan's 'features' "
        "if it has them, else 32 (nnU-Net)",
    )
    max_features: int | None = Field(
        None, ge=1, description="cap on channels per stage; None = the plan's 'features', else 320 in 3D, 512 in 2D"
    )
    deep_supervision: bool = Field(
        True, description="extra low-resolution outputs during training (models that support it)"
    )
    deep_supr_num: int | None = Field(
        None,
        ge=1,
        description="number of extra low-res outputs; None = all decoder levels above the bottleneck (nnU-Net); "
        "clipped to what the network depth allows",
    )
    res_block: bool = Field(False, description="dynunet: residual conv blocks instead of plain conv-norm-act pairs")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability inside conv blocks")
    spatial_dims: Literal[2, 3] = Field(3, description="only used when no plan configuration gives a patch size")
    max_depth: int | None = Field(
        None,
        ge=1,
        description="most downsampling steps when deriving the topology; None = as deep as the patch allows "
        "(nnU-Net), or 4 without any patch size",
    )
    min_feature_size: int = Field(4, ge=1, description="smallest feature-map edge the encoder may pool down to")
    unet_res_units: int = Field(2, ge=0, description="unet: residual units per level")
    fusion_stages: int = Field(2, ge=1, description="dynunet_midfusion: encoder stages each input channel (modality) has on its own before their mean-merge; clipped to stages - 1 (the bottleneck is shared)")

"""``model:`` config section: which registered network, and overrides of the plan's width/depth knobs.

The network's shape (kernels, strides, widths) comes from the plan configuration, derived by the one
rule of :mod:`medseg.models.topology`; ``base_features``, ``max_features``, ``max_pooling_steps`` and
``min_feature_map_size`` are that rule's knobs, named as in ``plan.*``: set, one replaces the plan's and
the shape is re-derived; None keeps the plan's. Kept free of torch imports so configs load fast.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field, model_validator

from medseg.config import Section

log = logging.getLogger(__name__)

#: Knob names of medseg <= 0.2 (in old configs and checkpoints) -> (today's name, the old default, which meant "the plan's").
_RENAMED = {"max_depth": ("max_pooling_steps", None), "min_feature_size": ("min_feature_map_size", 4)}
#: The fields that override the plan's network knobs (:class:`medseg.schema.plan.ShapeKnobs`).
SHAPE_KNOBS = ("base_features", "max_features", "max_pooling_steps", "min_feature_map_size")


class ModelConfig(Section):
    """Network choice and width; see ``medseg.models.available_models()`` for ``name``."""

    name: str = Field("dynunet", description="registered architecture: dynunet, lesion_instances (dynunet + lesion-centre head), unet, segresnet, fcn, segnet, deeplabv3plus, dynunet_midfusion (one encoder stem per input channel)")
    norm: Literal["instance", "batch"] = Field(
        "instance", description="instance norm (nnU-Net default, batch-size independent) or batch norm"
    )
    base_features: int | None = Field(
        None,
        ge=1,
        description="channels of the full-resolution stage, doubling per stage; None = the plan's (plan.base_features, "
        "plan.cpu_base_features on a CPU plan; 32 without a plan)",
    )
    max_features: int | None = Field(
        None, ge=1, description="cap on channels per stage; None = the plan's (320 in 3D, 512 in 2D without a plan)"
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
    max_pooling_steps: int | None = Field(
        None,
        ge=1,
        description="most down-sampling steps (stages - 1); None = the plan's (plan.max_pooling_steps), 4 without any patch size",
    )
    min_feature_map_size: int | None = Field(
        None, ge=1, description="smallest feature-map edge the encoder may pool down to; None = the plan's (4 without a plan)"
    )
    unet_res_units: int = Field(2, ge=0, description="unet: residual units per level")
    fusion_stages: int = Field(2, ge=1, description="dynunet_midfusion: encoder stages each input channel (modality) has on its own before their mean-merge; clipped to stages - 1 (the bottleneck is shared)")

    @model_validator(mode="before")
    @classmethod
    def _read_renamed_knobs(cls, data: Any) -> Any:
        """``max_depth``/``min_feature_size`` (medseg <= 0.2 configs, run folders, checkpoints) are today's knob names;
        at their old defaults they meant the plan's (its layout was used as stored), so they are dropped."""
        if not isinstance(data, dict) or not any(old in data for old in _RENAMED):
            return data
        data = dict(data)
        for old, (new, default) in _RENAMED.items():
            if old not in data:
                continue
            value = data.pop(old)
            if value == default:
                continue
            if data.get(new) is not None and data[new] != value:
                raise ValueError(f"model.{old} ({value}) is the old name of model.{new} ({data[new]}); keep one")
            log.warning("model.%s is now called model.%s; reading %s as model.%s", old, new, value, new)
            data[new] = value
        return data

    def shape_overrides(self) -> dict[str, int]:
        """The knobs this config sets (each replaces the plan's; see :func:`medseg.models.topology.reshape`)."""
        values = {name: getattr(self, name) for name in SHAPE_KNOBS}
        return {name: value for name, value in values.items() if value is not None}

"""Segmentation networks: a registry of architectures built from the plan.

``build_model(config, in_channels, out_channels, plan_configuration)`` is the entry point; the
output convention (list of logits in training with deep supervision, one tensor otherwise) is
described in :mod:`medseg.models.registry`, the plan schema in :mod:`medseg.models.topology`.
Attributes load lazily so that importing :mod:`medseg.models.config` does not import torch.
"""

from __future__ import annotations

from medseg._lazy import lazy_exports

_EXPORTS = {
    "ModelConfig": "medseg.models.config",
    "available_models": "medseg.models.registry",
    "build_model": "medseg.models.registry",
    "model_entry": "medseg.models.registry",
    "register_model": "medseg.models.registry",
    "Topology": "medseg.models.topology",
    "derive_kernels_and_strides": "medseg.models.topology",
    "pad_to_divisible": "medseg.models.topology",
    "plan_topology": "medseg.models.topology",
    "resolve_topology": "medseg.models.topology",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("medseg.models", _EXPORTS)

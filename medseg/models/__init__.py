"""Segmentation networks: a registry of architectures built from the plan.

``build_model(config, in_channels, out_channels, plan_configuration)`` is the entry point; the
output convention (list of logits in training with deep supervision, one tensor otherwise) is
described in :mod:`medseg.models.registry`, the network-shape rule in :mod:`medseg.models.topology`.
Attributes load lazily so that importing :mod:`medseg.models.config` does not import torch.
"""

from __future__ import annotations

from medseg._lazy import lazy_exports

__getattr__, __all__ = lazy_exports("medseg.models", {
    "medseg.models.config": ["ModelConfig"],
    "medseg.models.registry": ["available_models", "build_model", "model_entry", "register_model"],
    "medseg.models.topology": ["ShapeKnobs", "Topology", "derive_kernels_and_strides", "derive_topology", "pad_to_divisible",
                               "reshape", "resolve_topology"],
})

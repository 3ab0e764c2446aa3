"""Segmentation networks: a registry of architectures built from the plan.

``build_model(config, in_channels, out_channels, plan_configuration)`` is the entry point; the
output convention (list of logits in training with deep supervision, one tensor otherwise) is
described in :mod:`medseg.models.registry`, the plan schema in :mod:`medseg.models.topology`.
Attributes load lazily so that importing :mod:`medseg.models.config` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medseg.models' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

"""Model registry: architectures register a builder under a name; configs pick one by ``model.name``.

Output convention shared by every entry (the loss relies on it):

* ``model.train()`` with deep supervision enabled and supported: a ``list`` of logits
  ``[full_res, down1, down2, ...]``, each ``(B, classes, *spatial_i)``, from finest to coarsest,
  each at its own native resolution (not upsampled);
* otherwise (eval mode, or no deep supervision): one tensor ``(B, classes, *input_spatial)``.

Input spatial sizes must be divisible by the network's total stride (the plan's patch size is).

Adding an architecture: put ``@register_model("name")`` on a documented builder
``build(config, in_channels, out_channels, topology) -> nn.Module`` in
``medseg/models/<name>.py`` and list that module in ``_BUILTIN_MODULES``; the contract test in
tests/models/test_contract.py then covers it automatically.

The *encoder* (what ``train.freeze_encoder_epochs`` freezes) is the modules named by the entry's
``encoder`` (e.g. dynunet's ``input_block``, ``downsamples`` and ``bottleneck``); an entry that names
none gets :func:`medseg.models.encoder.encoder_parameters`' general rule instead: every parameter
registered before the first upsampling module (transposed convolution or upsample layer).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

from medseg.errors import ConfigError
from medseg.models.config import ModelConfig
from medseg.models.topology import resolve_topology
from medseg.schema.plan import Configuration, Topology

logger = logging.getLogger(__name__)

#: ``build(config, in_channels, out_channels, topology)``: the topology is the network's shape, from the plan (see
#: :mod:`medseg.models.topology`); a builder lays its stages out from it and derives nothing itself.
Builder = Callable[[ModelConfig, int, int, Topology], nn.Module]

#: Modules whose import registers the built-in entries; loaded on first use of the registry.
_BUILTIN_MODULES = (
    "medseg.models.dynunet",
    "medseg.models.lesion_instances",
    "medseg.models.midfusion",
    "medseg.models.unet",
    "medseg.models.segresnet",
    "medseg.models.fcn",
    "medseg.models.segnet",
    "medseg.models.deeplab",
    "medseg.models.resenc",
)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Builder
    summary: str
    deep_supervision: bool
    encoder: tuple[str, ...] = ()  # top-level module names that form the encoder; () = the general rule


_REGISTRY: dict[str, ModelEntry] = {}
_builtins_loaded = False


def register_model(name: str, *, deep_supervision: bool = False, encoder: tuple[str, ...] = ()) -> Callable[[Builder], Builder]:
    """Decorator: ``@register_model("dynunet", deep_supervision=True)`` over ``build(config, in, out, plan)``.

    The builder's docstring first line is the entry's one-line summary (required, so the list of
    models documents itself). ``deep_supervision`` says whether the network can return the
    multi-resolution list described in the module docstring. ``encoder`` names the modules (dotted
    names as in ``named_modules()``) that form the encoder; leave it empty for the general rule.
    """

    def decorator(builder: Builder) -> Builder:
        doc = (builder.__doc__ or "").strip()
        if not doc:
            raise TypeError(f"model builder for '{name}' needs a docstring: its first line is the summary")
        existing = _REGISTRY.get(name)
        if existing is not None and existing.builder is not builder:
            raise ValueError(f"model '{name}' is already registered by {existing.builder.__module__}")
        _REGISTRY[name] = ModelEntry(name, builder, doc.splitlines()[0].strip(), deep_supervision, tuple(encoder))
        return builder

    return decorator


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        _builtins_loaded = True


def available_models() -> dict[str, str]:
    """Registered names (sorted) mapped to their one-line summaries."""
    _load_builtins()
    return {name: _REGISTRY[name].summary for name in sorted(_REGISTRY)}


def model_entry(name: str) -> ModelEntry:
    """The registry entry, or a ConfigError that lists the valid names."""
    _load_builtins()
    if name not in _REGISTRY:
        raise ConfigError(f"model.name: unknown model '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_model(
    config: ModelConfig,
    in_channels: int,
    out_channels: int,
    plan_configuration: Configuration | Topology | Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build ``config.name`` for ``in_channels`` image channels and ``out_channels`` classes (incl. background).

    ``plan_configuration`` is the plan configuration (or its :class:`~medseg.schema.plan.Topology`) to build;
    without it, the topology follows ``config.spatial_dims`` and ``config.max_pooling_steps``. The builder gets
    :func:`model_topology`: the plan's own shape, re-derived only where a ``model.*`` knob overrides it.
    """
    entry = model_entry(config.name)
    if in_channels < 1 or out_channels < 1:
        raise ConfigError(f"model: in_channels ({in_channels}) and out_channels ({out_channels}) must be >= 1")
    if config.deep_supervision and not entry.deep_supervision:
        logger.info("model '%s' has no deep supervision heads; training uses its single output", config.name)
    return entry.builder(config, in_channels, out_channels, model_topology(config, plan_configuration))


def model_topology(config: ModelConfig, plan_configuration: Configuration | Topology | Mapping[str, Any] | None) -> Topology:
    """The shape :func:`build_model` hands the builder: the configuration's, with ``config``'s knob overrides applied."""
    return resolve_topology(plan_configuration, spatial_dims=config.spatial_dims, **config.shape_overrides())


def monai_norm(config: ModelConfig) -> tuple[str, dict[str, Any]]:
    """MONAI norm spec: affine instance norm (nnU-Net) or batch norm."""
    return ("INSTANCE", {"affine": True}) if config.norm == "instance" else ("BATCH", {})


def deep_supervision_heads(config: ModelConfig, allowed: int, what: str) -> int:
    """Extra low-resolution outputs to build: ``model.deep_supr_num`` (None = all ``allowed``) clipped to
    ``allowed``, 0 without deep supervision. ``what`` names the limit in the log line."""
    if not config.deep_supervision:
        return 0
    allowed = max(allowed, 0)
    wanted = allowed if config.deep_supr_num is None else config.deep_supr_num
    if wanted > allowed:
        logger.info("deep_supr_num %d clipped to %d (%s)", wanted, allowed, what)
    return min(wanted, allowed)


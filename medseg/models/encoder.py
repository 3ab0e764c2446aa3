"""Which parameters of a registered network form its *encoder* (what ``train.freeze_encoder_epochs`` freezes).

Two sources, in order:

1. the registry entry's ``encoder``: module names, e.g. dynunet's ``input_block``, ``downsamples`` and
   ``bottleneck`` (the contracting path down to and including the bottleneck), segresnet's ``encoder``;
2. otherwise a general rule that holds for encoder-decoder networks built the usual way (modules registered
   in forward order, the decoder starting with an upsampling): every parameter registered before the first
   upsampling module (a transposed convolution, ``nn.Upsample`` or MONAI's ``UpSample``). For MONAI's
   ``UNet`` (``unet``) this is every down layer and the bottom layer. For dynunet and segresnet the rule
   gives exactly the declared modules (tests/train/test_init_from.py checks that).

A network for which neither works is a ConfigError that says to declare ``encoder=`` in its ``register_model``.
"""

from __future__ import annotations

from torch import nn

from medseg.errors import ConfigError
from medseg.models.registry import model_entry

_UPSAMPLING = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Upsample)


def _is_upsampling(module: nn.Module) -> bool:
    return isinstance(module, _UPSAMPLING) or type(module).__name__ in ("UpSample", "SubpixelUpsample")


def _first_upsampling(network: nn.Module) -> str | None:
    return next((name for name, module in network.named_modules() if name and _is_upsampling(module)), None)


def _inside(name: str, module_names: tuple[str, ...]) -> bool:
    return any(name == module or name.startswith(module + ".") for module in module_names)


def encoder_rule(model_name: str) -> str:
    """How the encoder of ``model_name`` is chosen, in words (for logs and reports)."""
    entry = model_entry(model_name)
    if entry.encoder:
        return f"{model_name}'s registered encoder modules ({', '.join(entry.encoder)})"
    return f"every parameter of {model_name} before its first upsampling module"


def encoder_parameters(network: nn.Module, model_name: str) -> list[tuple[str, nn.Parameter]]:
    """The encoder's parameters of ``network`` (the plain module, not a DDP or compiled wrapper), in order."""
    named = list(network.named_parameters())
    entry = model_entry(model_name)
    if entry.encoder:
        chosen = [(name, parameter) for name, parameter in named if _inside(name, entry.encoder)]
    else:
        first = _first_upsampling(network)
        stop = next((index for index, (name, _) in enumerate(named) if first is not None and _inside(name, (first,))), None)
        chosen = named[:stop] if stop is not None else []
    if not chosen or len(chosen) == len(named):
        raise ConfigError(f"train.freeze_encoder_epochs: cannot tell the encoder of model '{model_name}' "
                          f"({encoder_rule(model_name)} gives {len(chosen)} of {len(named)} parameter tensors); "
                          f"declare it with register_model(..., encoder=(module names)) or set train.freeze_encoder_epochs=0")
    return chosen

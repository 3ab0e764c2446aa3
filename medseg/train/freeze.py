"""Encoder freezing for the first ``train.freeze_encoder_epochs`` epochs of a (fine-tuning) run.

Frozen means ``requires_grad=False``: backward computes no gradient for the encoder, so its ``.grad`` stays
``None`` (the step zeroes gradients with ``set_to_none``) and SGD/AdamW skip those parameters entirely: no
update, no momentum, no weight decay. Buffers (batch-norm running statistics) still update in training
mode; medseg's default instance norm has none. Whether an epoch is frozen follows only from the epochs
already done (``epochs_done < N``), so a run resumed mid-freeze stays frozen until exactly epoch N. Which
parameters form the encoder is :func:`medseg.models.encoder.encoder_parameters`.

Two things the trainer does when the state changes, both found on a GPU (tests/train/test_init_from.py, gpu marker):
torch.compile does not notice ``requires_grad`` changing (its graph kept the encoder gradient-free after
unfreezing), so the trainer compiles again; and fused SGD fails on a momentum-buffer list that is only partly
filled, so :func:`prime_momentum` gives the unfrozen parameters zero buffers, which is exactly SGD's first step
(without dampening, ``0 * momentum + grad`` is the ``grad`` SGD would start its buffer with).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from medseg.models.encoder import encoder_parameters, encoder_rule

log = logging.getLogger(__name__)


@dataclass
class EncoderFreeze:
    names: list[str]
    parameters: list[nn.Parameter]
    epochs: int
    rule: str
    frozen: bool = False

    @classmethod
    def build(cls, network: nn.Module, model_name: str, epochs: int, fresh: set[str] | frozenset[str] = frozenset()) -> EncoderFreeze:
        """``fresh``: tensor names that --init-from left freshly initialised (e.g. a first convolution for other input
        channels); they train from the start, since freezing random weights would only waste the freeze epochs."""
        named = network.state_dict(keep_vars=True)  # every name, aliases included, so any of a tensor's names matches
        fresh_ids = {id(tensor) for name, tensor in named.items() if name in fresh}
        encoder = encoder_parameters(network, model_name)
        chosen = [(name, parameter) for name, parameter in encoder if id(parameter) not in fresh_ids]
        if len(chosen) < len(encoder):
            log.info("%d encoder tensors stay trainable while the encoder is frozen: --init-from left them freshly initialised (%s)",
                     len(encoder) - len(chosen), ", ".join(name for name, parameter in encoder if id(parameter) in fresh_ids)[:300])
        return cls([name for name, _ in chosen], [parameter for _, parameter in chosen], epochs, encoder_rule(model_name))

    @property
    def size(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters)

    def update(self, epochs_done: int) -> bool:
        """Freeze while fewer than ``epochs`` epochs are done, else unfreeze; True when that changed something."""
        frozen = epochs_done < self.epochs
        if frozen == self.frozen:
            return False
        for parameter in self.parameters:
            parameter.requires_grad_(not frozen)
            parameter.grad = None
        self.frozen = frozen
        if frozen:
            log.info("encoder frozen for epochs %d-%d: %d tensors, %s parameters (%s)", epochs_done + 1, self.epochs, len(self.parameters),
                     f"{self.size:,}", self.rule)
        else:
            log.info("encoder unfrozen from epoch %d on: every parameter trains", epochs_done + 1)
        return True


def prime_momentum(optimizer: torch.optim.Optimizer, parameters: list[nn.Parameter]) -> int:
    """Zero momentum buffers for ``parameters`` that have none yet (SGD with momentum, no dampening); returns how many."""
    primed = 0
    if not isinstance(optimizer, torch.optim.SGD):
        return primed
    wanted = {id(parameter) for parameter in parameters}
    for group in optimizer.param_groups:
        if not group.get("momentum") or group.get("dampening"):
            continue
        for parameter in group["params"]:
            state = optimizer.state[parameter]
            if id(parameter) in wanted and state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
                primed += 1
    return primed

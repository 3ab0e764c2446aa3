"""One optimisation step, with at most one host-device synchronisation.

:class:`TrainStep` owns the pieces a step needs (the network as it runs, the loss, the optimizer,
the grad scaler and the runtime) and is public, so benchmarks time exactly what training runs.
Losses stay on the device: :meth:`TrainStep.losses_since_sync` reads them back every
``sync_every`` steps (one transfer for many steps) and checks them for NaN/inf there. Labels
arrive as uint8 and are widened on the device. Nothing here calls ``.item()`` per step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from medseg.errors import brief
from medseg.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class TrainStep:
    model: nn.Module  # what runs forward: the network, compiled and/or wrapped in DDP
    network: nn.Module  # the plain network whose parameters are optimised and saved
    loss: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    runtime: Runtime
    grad_clip: float | None = None
    channels_last: bool = False
    eager_model: nn.Module | None = None  # set when ``model`` is compiled (one process): what runs if compiling fails
    forward_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {"objectness": True}: the head's output for the loss
    _pending: list[torch.Tensor] = field(default_factory=list)

    def to_device(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        image = batch["image"].to(self.runtime.device, non_blocking=True)
        if self.channels_last and image.ndim == 5:
            image = image.contiguous(memory_format=torch.channels_last_3d)
        label = batch["label"].to(self.runtime.device, non_blocking=True).long()
        return image, label

    def __call__(self, batch: dict[str, torch.Tensor], lr: float) -> torch.Tensor:
        """Forward, backward and update at learning rate ``lr``; returns the loss as a device tensor.

        The first step of a compiled model compiles it (forward and backward); if that fails (no C++
        compiler, an unsupported op), the step is redone eagerly and training goes on without compiling.
        """
        eager, self.eager_model = self.eager_model, None
        if eager is None:
            return self._step(batch, lr)
        try:
            return self._step(batch, lr)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as error:  # an eager failure fails again below and surfaces there
            reason = f"{type(error).__name__}: {brief(error)}"
        # retried outside the handler, so the failed attempt's traceback (and the activations it holds) is freed
        log.warning("torch.compile failed (%s); training continues without compiling", reason)
        self.model = eager
        self.optimizer.zero_grad(set_to_none=True)
        return self._step(batch, lr)

    def _step(self, batch: dict[str, torch.Tensor], lr: float) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        image, label = self.to_device(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with self.runtime.autocast():
            output = self.model(image, **self.forward_kwargs)
        loss = self.loss(as_float(output), label)
        self.scaler.scale(loss).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip, foreach=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        detached = loss.detach()
        self._pending.append(detached)
        return detached

    def losses_since_sync(self, iteration: int) -> list[float]:
        """The losses of the steps since the last call, as floats (one transfer); NaN/inf is an error."""
        if not self._pending:
            return []
        values = torch.stack(self._pending).float().cpu().tolist()
        self._pending.clear()
        bad = [value for value in values if not torch.isfinite(torch.tensor(value))]
        if bad:
            raise FloatingPointError(f"training loss became {bad[0]} by iteration {iteration}; lower train.lr or disable AMP (train.amp=off)")
        return values


def as_float(output: Any) -> Any:
    """A model output in float32: a tensor, a list of them (deep supervision) or a NamedTuple of those (InstanceOutput)."""
    if isinstance(output, torch.Tensor):
        return output.float()
    if hasattr(output, "_fields"):
        return type(output)(*(as_float(item) for item in output))
    return [as_float(item) for item in output]


def make_optimizer(network: nn.Module, name: str, lr: float, momentum: float, nesterov: bool, weight_decay: float, fused: bool) -> torch.optim.Optimizer:
    """SGD+Nesterov (nnU-Net) or AdamW; ``fused`` uses torch's single-kernel implementation (CUDA)."""
    options = {"fused": True} if fused else {"foreach": True}
    if name == "sgd":
        return torch.optim.SGD(network.parameters(), lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, **options)
    return torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=weight_decay, **options)

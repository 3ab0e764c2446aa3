"""Optional ``torch.compile`` of the inference networks, and when it pays.

On CPU, inductor with weight freezing runs the 3D DynUNet about 1.9x faster per window than eager
PyTorch (96^3 window, 16 base features, 2 cores: 0.37 vs 0.69 s), because it prepacks the
convolution weights for oneDNN and fuses instance norm and activations. Freezing is the part that
matters: without it the compiled network is as slow as eager. The price is a one-off compile of
about 18 s (about 5 s when torch's on-disk cache under ``$TORCHINDUCTOR_CACHE_DIR`` is warm), so
``infer.compile=auto`` compiles only when a run has enough windows to win the time back.

A compiled network sees one fixed batch shape (short last batches are zero-padded), so it is
compiled once. If compiling fails (no C++ compiler, an unsupported layer), the eager network is
used and a warning says why: compilation is a speed-up, never a reason for inference to fail.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

def should_compile(setting: str, device: torch.device, windows: float, min_windows: int) -> bool:
    """``on``/``off`` as given; ``auto``: CPU runs with at least ``min_windows`` network calls ahead."""
    if setting == "on":
        return True
    if setting == "off" or device.type != "cpu":
        return False
    return windows >= min_windows


class CompiledNetwork(nn.Module):
    """The network, compiled on first use; falls back to eager on any compile error."""

    def __init__(self, network: nn.Module, batch_size: int):
        super().__init__()
        self.network = network
        self.batch_size = batch_size
        self.compiled: Any = None
        self.failed = False

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.failed:
            return self.network(batch)
        count = batch.shape[0]
        if count < self.batch_size:  # one graph for every call: pad the last, shorter batch
            batch = torch.cat([batch, batch.new_zeros((self.batch_size - count, *batch.shape[1:]))])
        try:
            import torch._inductor.config as inductor_config  # 1.3 s to import: only when compiling is asked for

            if self.compiled is None:
                self.compiled = torch.compile(self.network, dynamic=False)
                log.info("compiling the network with torch.compile (one-off; cached on disk for later runs)")
            # freezing: weights as constants, so oneDNN convolution weights are prepacked once. Patched
            # around the call (compilation happens inside it), never set globally: a later
            # torch.compile for training must not freeze weights. (options={"freezing": True} in
            # torch.compile was measured to have no effect in torch 2.13.)
            with inductor_config.patch(freezing=True):
                output = self.compiled(batch)
        except Exception as error:  # noqa: BLE001 - any compiler failure means: run eager
            self.failed = True
            log.warning("torch.compile failed (%s: %s); running the network uncompiled", type(error).__name__, str(error).splitlines()[0][:200] if str(error) else "")
            return self.network(batch[:count])
        return output[:count] if count < self.batch_size else output

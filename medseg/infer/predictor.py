"""Sliding-window probabilities on the preprocessed grid: Gaussian blending, mirroring TTA, fold
ensembles, AMP, and stitching on the GPU or the CPU. Used by `medseg infer` and by training's
full-volume validation, so the Dice a run reports is the Dice users get.

MONAI's ``sliding_window_inference`` does the window placement and Gaussian-weighted stitching
(``mode="gaussian"``, sigma = 1/8 of the window, as nnU-Net). What happens inside one window is
medseg's: every fold network sees the window and its mirror images, and their **probabilities**
(softmax, or per-region sigmoid for region-based models) are averaged there, so an ensemble with
TTA still needs one stitching buffer and one pass over the windows. Blending probabilities (not
logits) makes the stitched result directly the averaged probability that ensembling is defined on.

``runtime.device`` (where windows are computed) and ``stitch_device`` (where the full-size output
lives) are separate: with CPU stitching only one batch of windows is on the GPU at a time, so GPU
memory does not grow with the image. On the GPU the stitching buffers are float16 (half the
memory, argmax unchanged to fp16 rounding); on the CPU float32.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from medseg.errors import ConfigError
from medseg.runtime import Runtime

log = logging.getLogger(__name__)

SLICES_PER_CALL_2D = 32
Activation = Literal["softmax", "sigmoid"]


@dataclass(frozen=True)
class WindowSpec:
    """How windows are laid over a case and what one window's output is."""

    patch_size: tuple[int, ...]
    overlap: float = 0.5
    sw_batch_size: int = 1
    mirrors: tuple[tuple[int, ...], ...] = ((),)
    slice_axis: int | None = None  # 2D networks: the RAS axis slices are taken across
    activation: Activation = "softmax"

    @property
    def spatial_dims(self) -> int:
        return len(self.patch_size)


def default_sw_batch_size(device: torch.device, patch_size: tuple[int, ...]) -> int:
    """On CUDA about 8M voxels per call (at least 4 windows: 4 of 128^3, 32 of 64^3); on CPU about 1M
    voxels per call: 1 window of 96^3 (batching it was measured no faster on 2 cores, 0.72 vs 0.74
    s/window), 8 of 32x32x16 (6x faster per window than one at a time)."""
    voxels = math.prod(patch_size)
    if device.type == "cuda":
        return int(min(64, max(4, round(2**23 / voxels))))
    return int(min(8, max(1, round(2**20 / voxels))))


def stitch_device(setting: str, runtime: Runtime, num_classes: int, shape: tuple[int, ...], gpu_fraction: float = 0.4) -> torch.device:
    """Where the (classes + 1) x shape stitching buffers go: GPU while they fit, else CPU."""
    if runtime.device.type != "cuda":
        if setting == "gpu":
            raise ConfigError("infer.stitch_device=gpu needs a CUDA device; use --device cuda or stitch_device=cpu")
        return torch.device("cpu")
    if setting == "gpu":
        return runtime.device
    if setting == "cpu":
        return torch.device("cpu")
    need = (num_classes + 2) * math.prod(shape) * 2  # float16 buffers on the GPU
    free, _ = torch.cuda.mem_get_info(runtime.device)
    chosen = runtime.device if need <= gpu_fraction * free else torch.device("cpu")
    log.debug("stitching %.2f GB on %s (%.2f GB free on the GPU)", need / 1e9, chosen, free / 1e9)
    return chosen


def mirror_sets(axes: list[int] | None, spatial_dims: int, tta: bool) -> tuple[tuple[int, ...], ...]:
    """Tensor dims to flip for each TTA pass: the identity plus every non-empty subset of the axes."""
    if not tta:
        return ((),)
    if axes is not None and any(a < 0 or a > 2 for a in axes):
        raise ConfigError(f"infer.tta_axes must hold spatial axes 0, 1 or 2, got {axes}")
    chosen = list(range(spatial_dims)) if axes is None else [a for a in axes if a < spatial_dims]
    dims = [a + 2 for a in sorted(set(chosen))]
    return tuple(combo for size in range(len(dims) + 1) for combo in itertools.combinations(dims, size))


def window_function(networks: Sequence[Callable[[torch.Tensor], torch.Tensor]], spec: WindowSpec, runtime: Runtime,
                    on_call: Callable[[int], None] | None = None,
                    member_entropy: bool = False,
                    objectness: bool = False) -> Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]]:
    """``windows (B, C, *patch) -> mean probabilities (B, K, *patch)`` over folds and mirror images.

    ``member_entropy``: also return the mean over members (folds x mirror passes) of each member's
    softmax entropy in nats, ``(B, 1, *patch)``, for the mutual information of the ensemble. The
    mean probabilities are computed by exactly the same operations either way.
    ``objectness``: the networks return one more channel, last, an objectness logit
    (:class:`medseg.models.lesion_instances.ObjectnessChannel`); its sigmoid is averaged over the
    members like the probabilities and returned right after them, ``(B, 1, *patch)``.
    """
    passes = len(networks) * len(spec.mirrors)
    activate = (lambda logits: torch.softmax(logits, dim=1)) if spec.activation == "softmax" else torch.sigmoid

    def predict(batch: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if runtime.autocast_dtype is None and batch.dtype != torch.float32:
            batch = batch.float()  # fp16 stitching buffers hand out fp16 windows
        total, entropy, centres = None, None, None
        for network in networks:
            for dims in spec.mirrors:
                x = torch.flip(batch, dims) if dims else batch
                with runtime.autocast():
                    logits = network(x)
                if objectness:
                    own_centres = torch.sigmoid(logits[:, -1:].float())
                    own_centres = torch.flip(own_centres, dims) if dims else own_centres
                    centres = own_centres if centres is None else centres.add_(own_centres)
                    logits = logits[:, :-1]
                probabilities = activate(logits.float())
                if dims:
                    probabilities = torch.flip(probabilities, dims)
                if member_entropy:  # before the sum below reuses the first member's tensor
                    own = torch.special.entr(probabilities).sum(1, keepdim=True)
                    entropy = own if entropy is None else entropy.add_(own)
                total = probabilities if total is None else total.add_(probabilities)
        if on_call is not None:
            on_call(batch.shape[0])
        mean = total.div_(passes) if passes > 1 else total
        extra = []
        if objectness:
            extra.append(centres.div_(passes) if passes > 1 else centres)
        if member_entropy:
            extra.append(entropy.div_(passes) if passes > 1 else entropy)
        return (mean, *extra) if extra else mean

    return predict


def _scan_count(size: int, roi: int, overlap: float) -> int:
    """Windows along one axis, following MONAI's placement rule."""
    if roi >= size:
        return 1
    interval = max(int(roi * (1 - overlap)), 1)
    return int(math.ceil((size - roi) / interval)) + 1


def count_windows(shape: tuple[int, ...], patch: tuple[int, ...], overlap: float, slice_axis: int | None = None) -> int:
    """Number of sliding windows for a preprocessed (X, Y, Z) case (2D: slices x windows per slice)."""
    if len(patch) == 2:
        axis = 2 if slice_axis is None else slice_axis
        plane = [s for a, s in enumerate(shape) if a != axis]
        return shape[axis] * math.prod(_scan_count(s, p, overlap) for s, p in zip(plane, patch))
    return math.prod(_scan_count(s, p, overlap) for s, p in zip(shape, patch))


def _as_float_tensor(image: np.ndarray | torch.Tensor, target: torch.device) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        tensor = image
    else:  # cached cases are read-only memory maps: copy those
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32) if image.flags.writeable else np.array(image, dtype=np.float32))
    tensor = tensor.float()
    return tensor.to(target) if target.type == "cuda" else tensor


def _stitch(predict: Callable, image: np.ndarray | torch.Tensor, spec: WindowSpec, runtime: Runtime, target: torch.device,
            channels: Sequence[int]) -> list[torch.Tensor]:
    """Sliding-window stitching of ``predict``'s outputs (one tensor, or one per entry of ``channels``), each
    Gaussian-blended over the windows by MONAI and returned as float32 ``(channels[i], X, Y, Z)``."""
    tensor = _as_float_tensor(image, target)
    buffer_dtype = torch.float16 if target.type == "cuda" else torch.float32
    common = dict(sw_batch_size=spec.sw_batch_size, predictor=predict, overlap=spec.overlap, mode="gaussian",
                  sw_device=runtime.device, device=target)
    if spec.spatial_dims == 3:
        stitched = sliding_window_inference(tensor[None].to(buffer_dtype) if buffer_dtype != torch.float32 else tensor[None], spec.patch_size,
                                            **common)
        return [output[0].float() for output in (stitched if isinstance(stitched, (tuple, list)) else (stitched,))]
    axis = 2 if spec.slice_axis is None else spec.slice_axis
    slices = torch.movedim(tensor, axis + 1, 0)  # (S, C, a, b)
    outputs = [torch.empty((slices.shape[0], count, *slices.shape[2:]), dtype=buffer_dtype, device=target) for count in channels]
    for start in range(0, slices.shape[0], SLICES_PER_CALL_2D):
        chunk = slices[start : start + SLICES_PER_CALL_2D]
        stitched = sliding_window_inference(chunk, spec.patch_size, **common)
        for output, part in zip(outputs, stitched if isinstance(stitched, (tuple, list)) else (stitched,)):
            output[start : start + chunk.shape[0]] = part
    return [torch.movedim(output, 0, axis + 1).float() for output in outputs]


@torch.inference_mode()
def predict_probabilities(
    networks: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    image: np.ndarray | torch.Tensor,
    spec: WindowSpec,
    runtime: Runtime,
    target: torch.device,
    num_classes: int,
    on_windows: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Mean probabilities ``(K, X, Y, Z)`` of a preprocessed ``(C, X, Y, Z)`` image, on ``target``.

    A pure function: every knob is an argument (MONAI's ``sliding_window_inference`` style).
    """
    return _stitch(window_function(networks, spec, runtime, on_windows), image, spec, runtime, target, [num_classes])[0]


@dataclass
class StitchedOutputs:
    """What :func:`predict_outputs` stitched on the model grid: probabilities ``(K, X, Y, Z)``, and when asked
    for, the mean objectness probability ``(X, Y, Z)`` and the expected member entropy ``(X, Y, Z)`` in nats."""

    probabilities: torch.Tensor
    objectness: torch.Tensor | None = None
    expected_entropy: torch.Tensor | None = None


@torch.inference_mode()
def predict_outputs(
    networks: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    image: np.ndarray | torch.Tensor,
    spec: WindowSpec,
    runtime: Runtime,
    target: torch.device,
    num_classes: int,
    on_windows: Callable[[int], None] | None = None,
    *,
    objectness: bool = False,
    member_entropy: bool = False,
) -> StitchedOutputs:
    """:func:`predict_probabilities` plus any of the 1-channel extras, all from one pass over the windows:
    ``objectness`` (networks wrapped in :class:`~medseg.models.lesion_instances.ObjectnessChannel`) and
    ``member_entropy`` (the mean over folds and mirror passes of each one's softmax entropy, in nats). The probabilities are those of
    :func:`predict_probabilities`."""
    predict = window_function(networks, spec, runtime, on_windows, member_entropy=member_entropy, objectness=objectness)
    stitched = _stitch(predict, image, spec, runtime, target, [num_classes] + [1] * (int(objectness) + int(member_entropy)))
    extras = iter(stitched[1:])
    centres = next(extras)[0] if objectness else None
    entropy = next(extras)[0] if member_entropy else None
    return StitchedOutputs(stitched[0], centres, entropy)

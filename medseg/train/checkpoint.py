"""Self-contained checkpoints (:class:`~medseg.schema.CheckpointPayload`): weights, resolved config, plan,
labels, and for ``checkpoint_last.pt`` the complete resume state.

Stored as tensors and plain Python containers so that ``torch.load(..., weights_only=True)`` reads
them: loading a checkpoint cannot run code. Always loaded onto the CPU: RNG states must be CPU byte
tensors to be restored, and the caller moves the weights where it wants them (a GPU run saved on
``cuda:3`` resumes on any device). Writes go to a temporary file renamed into place, so a SIGKILL
during a save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import pickle
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg import __version__
from medseg.errors import InputError
from medseg.io.atomic import atomic_path
from medseg.schema.checkpoint import FORMAT_VERSION, CheckpointPayload
from medseg.schema.records import validate_record


def capture_rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """This process's RNG states: Python, NumPy, torch CPU and, on CUDA, the state of ``device``."""
    numpy_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _tuples_to_lists(random.getstate()),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        state["cuda"] = {str(index): torch.cuda.get_rng_state(index)}
    return state


def _byte_tensor(value: Any) -> torch.Tensor:
    """RNG states must be CPU uint8 tensors, whatever device or dtype they were loaded as."""
    return torch.as_tensor(value).detach().to(device="cpu", dtype=torch.uint8)


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng_state`; CUDA states go back to their own device when it exists here."""
    random.setstate(_lists_to_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, torch.as_tensor(keys).cpu().numpy().astype(np.uint32), *rest))
    torch.set_rng_state(_byte_tensor(state["torch"]))
    cuda = state.get("cuda")
    if isinstance(cuda, list):  # format 1 kept every device's state in a list
        cuda = {str(index): value for index, value in enumerate(cuda)}
    if cuda and torch.cuda.is_available():
        for index, value in cuda.items():
            if int(index) < torch.cuda.device_count():
                torch.cuda.set_rng_state(_byte_tensor(value), int(index))


def _tuples_to_lists(value):
    return [_tuples_to_lists(item) for item in value] if isinstance(value, (tuple, list)) else value


def _lists_to_tuples(value):
    return tuple(_lists_to_tuples(item) for item in value) if isinstance(value, list) else value


def save_checkpoint(path: str | Path, payload: CheckpointPayload) -> Path:
    """Atomically write ``payload`` with torch.save (format and medseg version stamped in)."""
    path = Path(path)
    stamped = payload.model_copy(update={"format_version": FORMAT_VERSION, "medseg_version": __version__})
    with atomic_path(path) as temporary:
        torch.save(stamped.to_storage(), temporary)
    return path


def load_checkpoint(path: str | Path) -> CheckpointPayload:
    """Load onto the CPU with ``weights_only=True`` and validate; a foreign or damaged file is a one-line InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint does not exist" if not path.exists() else "is a folder, not a checkpoint file")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols of files it then refuses anyway
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle/zip errors vary by damage
        raise InputError(path, f"not a readable medseg checkpoint ({describe_load_error(error)})") from error
    if not isinstance(raw, dict) or "format_version" not in raw or "model" not in raw:
        raise InputError(path, "not a medseg checkpoint (missing format_version/model)")
    return validate_record(CheckpointPayload, raw, path, what="checkpoint")


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def describe_load_error(error: Exception) -> str:
    """What torch.load's several-paragraph error means, in a few words."""
    text = str(error)
    found = _GLOBAL.search(text)
    if found:
        return f"refused: it asks to load the Python object {found.group(1)}, and loading objects other than tensors could run code"
    if isinstance(error, pickle.UnpicklingError) or "WeightsUnpickler" in text:
        return "damaged, or not a file written by torch.save"
    if "central directory" in text or "zip archive" in text or isinstance(error, EOFError):
        return "truncated or corrupt: its zip archive is incomplete"
    return text.strip().splitlines()[0][:200] if text.strip() else type(error).__name__


def inference_checkpoint(network: torch.nn.Module, config: Any, plan: Any, configuration: Any, *, in_channels: int, out_channels: int | None = None,
                         fold: int | str | None = None, epoch: int = 0, train_cases: list[str] | None = None, val_cases: list[str] | None = None,
                         validation: Any = None) -> CheckpointPayload:
    """The one builder of a checkpoint payload: weights, model spec, resolved config, plan and labels.

    Training adds its resume state to it (``payload.model_copy(update={"training": ...})``); benchmarks and
    exports save it as it is. ``config`` is the :class:`~medseg.config.schema.RunConfig` the network was built with.
    """
    from medseg.schema.checkpoint import ModelSpec

    spec = ModelSpec(name=config.model.name, in_channels=in_channels, out_channels=out_channels or len(plan.labels), configuration=configuration)
    return CheckpointPayload(model=network.state_dict(), model_spec=spec, config=config.model_dump(mode="json"), plan=plan,
                             labels=dict(plan.labels), fold=fold, epoch=epoch, train_cases=list(train_cases or []),
                             val_cases=list(val_cases or []), validation=validation)

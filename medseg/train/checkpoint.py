"""Self-contained checkpoints: weights, resolved config, plan, labels, normalisation, optimiser,
scheduler, grad scaler, RNG states and counters.

Everything is stored as tensors and plain Python containers so that ``torch.load(...,
weights_only=True)`` can read it: no pickled classes, so loading a checkpoint cannot run code.
Writes go to a temporary file that is renamed into place, so a SIGKILL during a save leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg import __version__
from medseg.errors import InputError
from medseg.io.atomic import atomic_path

FORMAT_VERSION = 1


def capture_rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _tuples_to_lists(random.getstate()),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_lists_to_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples_to_lists(value):
    return [_tuples_to_lists(item) for item in value] if isinstance(value, (tuple, list)) else value


def _lists_to_tuples(value):
    return tuple(_lists_to_tuples(item) for item in value) if isinstance(value, list) else value


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (plus format and medseg version) with torch.save."""
    path = Path(path)
    payload = {"format_version": FORMAT_VERSION, "medseg_version": __version__, **payload}
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``; a foreign or damaged file becomes a one-line InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # pickle/zip errors vary by damage
        raise InputError(path, f"not a readable medseg checkpoint ({str(error).splitlines()[0][:200]})") from error
    if not isinstance(payload, dict) or "format_version" not in payload or "model" not in payload:
        raise InputError(path, "not a medseg checkpoint (missing format_version/model)")
    if payload["format_version"] > FORMAT_VERSION:
        raise InputError(path, f"checkpoint format {payload['format_version']} is newer than this medseg understands; upgrade medseg")
    return payload

"""Inference with a modality missing, as an explicit choice: ``infer.missing_channels`` / ``medseg infer --missing-modality``.

A multi-channel model (e.g. BraTS FLAIR + T1c) normally refuses a case that lacks one of its channel files: an
accidentally missing file is an error. Naming the channel (by the plan's channel name, case-insensitive, or its
0-based index) says it is missing on purpose: the case is then read without it (a file for it, if any, is not
read), and the channel is filled as *missing*: exactly 0 on the preprocessed grid, i.e. the channel's mean after
z-score normalisation. That is what ``augment.modality_dropout_prob`` trains with; ``dynunet_midfusion`` recognises
such an all-zero channel and leaves it out of its modality mean, an early-fusion network sees a mean-valued channel.
Every output sidecar lists the missing channels (``input.missing_channels``) and carries a warning.

Mechanics: the reader puts a zero *placeholder* volume on the first present channel's grid in the missing channel's
slot (marked in its ``meta``), so preprocessing runs unchanged (the zeros never widen the nonzero crop); the
segmenter then sets the placeholder's preprocessed channel to 0, whatever the channel's normalisation made of it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.io.volume import Volume
from medseg.schema.plan import Plan

log = logging.getLogger(__name__)

#: ``Volume.meta`` key of a placeholder for a missing channel (value: the channel index).
MISSING_META = "missing_channel"
HINT = "to run without a channel on purpose, name it: medseg infer --missing-modality NAME (infer.missing_channels)"


def channel_names(plan: Plan) -> list[str]:
    """The plan's channel names in channel order (from the dataset's channel_names / the import preset)."""
    named = sorted(plan.channels, key=lambda channel: channel.index)
    if len(named) == plan.num_channels:
        return [channel.name for channel in named]
    return [scheme.name for scheme in sorted(plan.preprocessing.normalization, key=lambda scheme: scheme.channel)]


def resolve_missing_channels(requested: Sequence[str | int], plan: Plan) -> tuple[int, ...]:
    """Channel indices for ``infer.missing_channels`` entries (names or indices); at least one channel must remain."""
    names = channel_names(plan)
    lowered = [name.lower() for name in names]
    choices = ", ".join(f"{index} ({name})" for index, name in enumerate(names))
    indices: set[int] = set()
    for item in requested:
        text = str(item).strip()
        if text.isdigit() and int(text) < len(names):
            indices.add(int(text))
        elif text.lower() in lowered:
            indices.add(lowered.index(text.lower()))
        else:
            raise ConfigError(f"infer.missing_channels: {item!r} is not a channel of this model; its channels are {choices}")
    if indices and len(indices) == len(names):
        raise ConfigError(f"infer.missing_channels: every channel of the model ({choices}) would be missing; at least one must be given")
    return tuple(sorted(indices))


def missing_volume(reference: Volume, index: int) -> Volume:
    """A zero placeholder for channel ``index`` on ``reference``'s grid."""
    source = f"{reference.meta.get('source', 'image')} (channel {index} missing)"
    meta = {**reference.meta, "source": source, MISSING_META: index}
    return Volume(np.zeros(reference.shape, dtype=np.float32), reference.affine.copy(), "image", meta)


def complete_channels(volumes: list[Volume], in_channels: int, missing: Sequence[int], where: Path) -> list[Volume]:
    """``in_channels`` volumes: the ones read (the present channels, or every channel of a 4D file) and placeholders."""
    if not missing:
        return volumes
    present = [index for index in range(in_channels) if index not in missing]
    if len(volumes) == in_channels:  # a 4D file with every channel: the ones named missing are not used
        log.info("%s: channel(s) %s named missing are not used", where, ", ".join(map(str, missing)))
        volumes = [volume for index, volume in enumerate(volumes) if index not in missing]
    if len(volumes) != len(present):
        raise InputError(where, f"has {len(volumes)} channel(s); with channel(s) {', '.join(map(str, missing))} missing "
                                f"the model takes {len(present)} ({', '.join(map(str, present))})")
    given = iter(volumes)
    return [missing_volume(volumes[0], index) if index in missing else next(given) for index in range(in_channels)]


def missing_indices(channels: Sequence[Volume]) -> list[int]:
    """Positions of placeholder channels among ``channels``."""
    return [index for index, volume in enumerate(channels) if MISSING_META in volume.meta]


def blank_missing(image, indices: Sequence[int]) -> None:
    """Set the preprocessed channels ``indices`` of ``(C, ...)`` (numpy array or torch tensor) to exactly 0, in place."""
    for index in indices:
        image[index] = 0

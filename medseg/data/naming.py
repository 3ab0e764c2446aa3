"""Case-file naming rules shared by datasets and inference inputs: what is junk, what a stem is, and
nnU-Net's ``<case>_NNNN`` channel suffix."""

from __future__ import annotations

import re
from pathlib import Path

from medseg.io.atomic import full_suffix

#: ``<case>_0000``: nnU-Net's channel suffix (four digits, the first channel is 0000).
CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def is_junk(path: Path) -> bool:
    """Hidden files, editor backups and OS droppings (``.DS_Store``, ``~$x``, ``x~``), never cases."""
    return path.name.startswith((".", "~")) or path.name.endswith("~")


def stem(path: Path) -> str:
    """The file name without its (possibly double, ``.nii.gz``) suffix."""
    suffix = full_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def channel_of(name: str) -> tuple[str, int] | None:
    """``("case", 1)`` for ``case_0001``; None when the name has no channel suffix."""
    match = CHANNEL_SUFFIX.match(name)
    return (match["case"], int(match["channel"])) if match else None

"""Recognise DICOM files by content, not by name.

Its own module so that the DICOM readers and writers need nothing from :mod:`medseg.io.readers`
(which dispatches to them): the DICOM modules never import the dispatcher.
"""

from __future__ import annotations

from pathlib import Path


def is_dicom_file(path: Path) -> bool:
    """DICOM Part 10 files carry ``DICM`` at byte 128, whatever their name."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False

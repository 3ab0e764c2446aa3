"""Where NRRD and MetaImage headers keep their voxel data, and how it is encoded.

SimpleITK tells the declared size (``ReadImageInformation``) but allocates all of it before it
finds out that the file is short. These few header fields let :mod:`medseg.io.itk` compare the
declared size with the bytes that really exist first. Only what that comparison needs is parsed;
SimpleITK remains the reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medseg.errors import InputError

_MAX_HEADER_BYTES = 1 << 20  # real headers are a few hundred bytes; stop looking after 1 MiB


@dataclass(frozen=True)
class DataLayout:
    encoding: str  # "raw", "deflate" (gzip/zlib), "bzip2", "text", "hex" or "other"
    data_bytes: int | None  # bytes that can hold the voxel data; None when spread over several files
    has_spacing: bool  # False: the header gives no voxel size and ITK assumes 1 mm


def _header_lines(path: Path, nrrd: bool) -> tuple[list[str], int]:
    """Header text lines and the byte offset where they end (the blank line of NRRD, ElementDataFile of MetaImage)."""
    with open(path, "rb") as handle:
        head = handle.read(_MAX_HEADER_BYTES)
    lines, offset = [], 0
    for raw in head.split(b"\n"):
        offset += len(raw) + 1
        text = raw.decode("latin-1").rstrip("\r")
        lines.append(text)
        if (nrrd and not text.strip()) or (not nrrd and text.replace(" ", "").lower().startswith("elementdatafile=")):
            break
    return lines, min(offset, len(head))


def _data_file_bytes(path: Path, name: str) -> int | None:
    """Size of the one detached data file ``name``; None for lists and numbered patterns."""
    name = name.strip()
    if name.upper().startswith("LIST") or "%" in name:
        return None
    data_path = Path(name) if Path(name).is_absolute() else path.parent / name
    if not data_path.is_file():
        raise InputError(path, f"its data file {name} (named in the header) does not exist")
    return data_path.stat().st_size


def _metaimage_layout(path: Path, lines: list[str], header_bytes: int) -> DataLayout:
    fields = {}
    for line in lines:
        key, _, value = line.partition("=")
        fields[key.strip().lower()] = value.strip()
    compressed = fields.get("compresseddata", "false").lower() in ("true", "1", "yes")
    data_file = fields.get("elementdatafile", "LOCAL")
    if data_file.upper() == "LOCAL":
        data_bytes: int | None = path.stat().st_size - header_bytes
    else:
        data_bytes = _data_file_bytes(path, data_file)
    has_spacing = "elementspacing" in fields or "elementsize" in fields
    return DataLayout("deflate" if compressed else "raw", data_bytes, has_spacing)


_NRRD_ENCODINGS = {"raw": "raw", "gz": "deflate", "gzip": "deflate", "bz2": "bzip2", "bzip2": "bzip2",
                   "txt": "text", "text": "text", "ascii": "text", "hex": "hex"}


def _nrrd_layout(path: Path, lines: list[str], header_bytes: int) -> DataLayout:
    fields = {}
    for line in lines[1:]:
        if line.startswith("#") or ":=" in line:
            continue  # comments and key/value pairs say nothing about the data
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.strip()
    encoding = _NRRD_ENCODINGS.get(fields.get("encoding", "raw").lower(), "other")
    data_file = fields.get("data file", fields.get("datafile"))
    if data_file is None:
        data_bytes: int | None = path.stat().st_size - header_bytes
    else:
        data_bytes = _data_file_bytes(path, data_file)
    has_spacing = any(key in fields for key in ("spacings", "space directions"))
    return DataLayout(encoding, data_bytes, has_spacing)


def read_layout(path: Path) -> DataLayout:
    """The data layout an NRRD (.nrrd/.nhdr) or MetaImage (.mha/.mhd) header describes."""
    with open(path, "rb") as handle:
        nrrd = handle.read(4) == b"NRRD"
    lines, header_bytes = _header_lines(path, nrrd)
    return _nrrd_layout(path, lines, header_bytes) if nrrd else _metaimage_layout(path, lines, header_bytes)

"""Safe extraction of downloaded tar/zip archives.

An archive from the internet is untrusted input. Before anything is written, every member is
checked: absolute paths, ``..`` components, symbolic/hard links, device files and FIFOs are
refused, so a tampered archive writes nothing at all. Accepted members are then extracted into a
temporary folder beside the destination and moved into place, never with the archive's own
permissions or owners. macOS metadata (``._*``, ``__MACOSX/``, ``.DS_Store``), which the MSD
tarballs contain, is skipped because dataset loaders would mistake it for images.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from medseg.errors import InputError, brief

log = logging.getLogger(__name__)

ARCHIVE_TYPES = ("tar", "tar.gz", "zip")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Member:
    name: str  # normalised relative POSIX path
    is_dir: bool
    size: int


def archive_type(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if name.endswith(".tar"):
        return "tar"
    if name.endswith(".zip"):
        return "zip"
    raise InputError(path, f"unknown archive type; expected one of {', '.join(ARCHIVE_TYPES)}")


def is_junk(name: str) -> bool:
    """macOS resource forks and folder metadata shipped inside some public archives."""
    parts = PurePosixPath(name).parts
    return any(part == "__MACOSX" or part.startswith("._") or part == ".DS_Store" for part in parts)


def _safe_name(archive: Path, raw: str) -> str:
    """Refuse absolute, drive-qualified, or parent-escaping member names; return the clean relative name."""
    name = raw.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise InputError(archive, f"refused: member '{raw}' has an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InputError(archive, f"refused: member '{raw}' contains '..' (path traversal)")
    if not parts:
        return ""
    return "/".join(parts)


def _tar_members(path: Path) -> list[Member]:
    members = []
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                name = _safe_name(path, info.name)
                if info.issym() or info.islnk():
                    raise InputError(path, f"refused: member '{info.name}' is a {'symbolic' if info.issym() else 'hard'} link")
                if info.isdev() or not (info.isfile() or info.isdir()):
                    raise InputError(path, f"refused: member '{info.name}' is a device, FIFO or other special file")
                if name:
                    members.append(Member(name, info.isdir(), int(info.size)))
    except tarfile.ReadError as error:  # its text lists every decompressor tried, one per line
        raise InputError(path, "not a readable tar archive (not tar, tar.gz, tar.bz2 or tar.xz data, or cut short)") from error
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise InputError(path, f"not a readable tar archive ({type(error).__name__}: {brief(error)})") from error
    return members


def _zip_members(path: Path) -> list[Member]:
    members = []
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = _safe_name(path, info.filename)
                kind = stat.S_IFMT(info.external_attr >> 16)  # Unix file type, 0 when the creator stored none
                if kind == stat.S_IFLNK:
                    raise InputError(path, f"refused: member '{info.filename}' is a symbolic link")
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise InputError(path, f"refused: member '{info.filename}' is a device, FIFO or other special file")
                if name:
                    members.append(Member(name, info.is_dir(), int(info.file_size)))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as error:
        raise InputError(path, f"not a readable zip archive ({brief(error)})") from error
    return members


def check_archive(path: str | Path) -> list[Member]:
    """Every member of the archive, after checking them all; raises InputError on the first unsafe one."""
    path = Path(path)
    kind = archive_type(path)
    members = _zip_members(path) if kind == "zip" else _tar_members(path)
    seen: dict[str, bool] = {}
    for member in members:
        # A file and a folder with the same name (or a file "under" a file) cannot both be written.
        parent = str(PurePosixPath(member.name).parent)
        if parent != "." and seen.get(parent) is False:
            raise InputError(path, f"refused: member '{member.name}' is inside '{parent}', which is a file")
        seen.setdefault(member.name, member.is_dir)
    return members


def _copy_stream(source, target_path: Path) -> None:
    with open(target_path, "wb") as target:
        shutil.copyfileobj(source, target, _CHUNK)


def _extract_into(path: Path, members: list[Member], root: Path) -> None:
    wanted = {m.name for m in members if not m.is_dir}
    for member in members:
        (root / member.name if member.is_dir else (root / member.name).parent).mkdir(parents=True, exist_ok=True)
    if archive_type(path) == "zip":
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = _safe_name(path, info.filename)
                if name in wanted:
                    with archive.open(info) as source:
                        _copy_stream(source, root / name)
        return
    with tarfile.open(path, "r:*") as tar:
        for info in tar:
            name = _safe_name(path, info.name)
            if name in wanted and info.isfile():
                source = tar.extractfile(info)
                if source is None:
                    raise InputError(path, f"member '{info.name}' cannot be read")
                with source:
                    _copy_stream(source, root / name)


def safe_extract(archive: str | Path, destination: str | Path, skip_junk: bool = True) -> list[Path]:
    """Check the whole archive, extract it into a temporary folder, then move its top-level entries into ``destination``.

    Returns the top-level paths created in ``destination``. Refuses to overwrite existing entries,
    so a rerun never mixes two versions of a dataset.
    """
    archive, destination = Path(archive), Path(destination)
    members = check_archive(archive)
    skipped = [m for m in members if is_junk(m.name)] if skip_junk else []
    if skipped:
        log.info("skipping %d macOS metadata entries (._*, __MACOSX) in %s", len(skipped), archive.name)
        members = [m for m in members if not is_junk(m.name)]
    tops = sorted({PurePosixPath(m.name).parts[0] for m in members})
    clashes = [top for top in tops if (destination / top).exists()]
    if clashes:
        raise InputError(destination / clashes[0], "already exists; remove it (or choose another --dest) before extracting again")
    destination.mkdir(parents=True, exist_ok=True)
    needed = sum(m.size for m in members)
    free = shutil.disk_usage(destination).free
    if needed > free:
        raise InputError(destination, f"needs {needed / 1e9:.2f} GB to extract {archive.name} but only {free / 1e9:.2f} GB is free")
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=destination))
    try:
        _extract_into(archive, members, staging)
        for top in tops:
            os.replace(staging / top, destination / top)
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError) as error:  # listed fine, but the data inside is damaged
        raise InputError(archive, f"damaged: a member's data cannot be read ({brief(error)})") from error
    except OSError as error:
        raise InputError(destination, f"cannot extract {archive.name} here ({error.strerror or error})") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("extracted %d entries from %s into %s", len(members), archive.name, destination)
    return [destination / top for top in tops]

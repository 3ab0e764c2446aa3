"""Atomic file writes: the output either appears whole, or not at all."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medseg.errors import InputError

# Suffixes some writers read to choose the format, so the temporary file must keep them.
_MULTI_SUFFIXES = (".nii.gz", ".tar.gz")


def full_suffix(path: str | Path) -> str:
    name = Path(path).name.lower()
    for suffix in _MULTI_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(path).suffix.lower()


# Write failures that are the place's fault (full disk, read-only or forbidden folder), not a bug.
_PLACE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG, errno.ENAMETOOLONG}


def check_output_file(path: str | Path) -> Path:
    """Refuse an output file name that cannot be written: a folder, or a parent that is missing, a file or read-only.

    Commands call it before doing any work, so a bad ``-o`` fails in a second, not after the computation.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(path, "is a folder; give an output file name inside it")
    if not parent.exists():
        raise InputError(path, f"output folder {parent} does not exist")
    if not parent.is_dir():
        raise InputError(path, f"{parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(path, f"output folder {parent} is not writable (permission denied)")
    return path


def make_parent_folder(path: str | Path) -> Path:
    """Create the folders above an output file; a file in the way or a forbidden folder is an InputError naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(path, f"{path.parent} is a file, not a folder") from None
    except NotADirectoryError:
        raise InputError(path, "a file stands where one of its folders should be") from None
    except OSError as error:
        raise _place_error(path, error) from error
    return path


def _place_error(path: Path, error: OSError) -> InputError:
    return InputError(path, f"cannot be written ({error.strerror or error})")


TEMPORARY_NAME_LIMIT = 200  # characters of the destination's name kept in its temporary's name


def leftover_temporaries(folder: Path) -> dict[str, list[Path]]:
    """Temporaries that killed writers left in ``folder`` (and one level down), found in one scan.

    :func:`atomic_path` names them ``.<name>.<random>.tmp<suffix>``; each is keyed by the name it was
    for (its first 200 characters), or, one level down, by its subfolder's name.
    """
    found: dict[str, list[Path]] = {}
    for temporary in [*folder.glob(".*.tmp*"), *folder.glob("*/.*.tmp*")]:
        owner = temporary.parent.name if temporary.parent != folder else temporary.name[1:].rsplit(".tmp", 1)[0].rsplit(".", 1)[0]
        found.setdefault(owner, []).append(temporary)
    return found


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary file keeps the destination's suffix so format-sniffing writers (nibabel,
    SimpleITK) behave the same. On any exception it is removed and ``path`` is untouched.
    A full disk or a forbidden folder is an :class:`InputError` naming ``path``.
    """
    path = check_output_file(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name[:TEMPORARY_NAME_LIMIT]}.", suffix=f".tmp{full_suffix(path)}", dir=parent)
    except OSError as error:
        raise _place_error(path, error) from error
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        # mkstemp creates files readable by the owner only; give the result normal permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary_path, 0o666 & ~umask)
        os.replace(temporary_path, path)
    except OSError as error:
        if error.errno in _PLACE_ERRORS or isinstance(error, IsADirectoryError):
            raise _place_error(path, error) from error
        raise
    finally:
        if temporary_path.exists():
            temporary_path.unlink()


@contextlib.contextmanager
def atomic_file_set(path: str | Path) -> Iterator[Path]:
    """Like :func:`atomic_path`, for writers that also create companion files (an .mhd and its .raw/.zraw).

    Yields ``path``'s name inside a fresh hidden folder beside it, so the header refers to its
    companions by their final names. On success every file written there is moved beside ``path``,
    ``path`` itself last (readers open the header first, and it appears only once its data is
    complete); on any exception the folder and everything in it is removed.
    """
    path = check_output_file(path)
    parent = path.parent if str(path.parent) else Path(".")
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    moved: list[Path] = []
    try:
        yield folder / path.name
        written = sorted(folder.iterdir(), key=lambda item: item.name == path.name)
        if not (folder / path.name).is_file():
            raise FileNotFoundError(f"the writer did not create {path.name}")
        umask = os.umask(0)
        os.umask(umask)
        for item in written:
            os.chmod(item, 0o666 & ~umask)
            os.replace(item, parent / item.name)
            moved.append(parent / item.name)
    except BaseException:
        for item in moved:  # companions moved before the header failed to follow
            item.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _json_default(value: object) -> object:
    """numpy scalars/arrays and paths, which json cannot store by itself."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` to ``path`` (the one writer of every text file medseg produces)."""
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return path


def write_json(path: str | Path, data: object, indent: int | None = 2, *, allow_nan: bool = True, make_parents: bool = True) -> Path:
    """Atomic JSON write; numpy values and paths are converted, ``indent=None`` writes compactly."""
    import json

    path = Path(path)
    if make_parents:
        make_parent_folder(path)
    separators = None if indent else (",", ":")
    text = json.dumps(data, indent=indent, default=_json_default, separators=separators, allow_nan=allow_nan)
    return write_text(path, text + "\n")

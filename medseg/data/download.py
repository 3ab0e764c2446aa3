"""Resumable, checksum-verified downloads with the standard library (http, https and file URLs).

Bytes go to ``<name>.part`` beside the destination. An interrupted download is continued with an
HTTP ``Range`` request (or a seek, for ``file://``), the whole file is then hashed, and only a
file whose checksum (and size, when known) matches is renamed to its final name. A mismatch
deletes the partial file and raises, because a corrupt or tampered archive must never be used.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from medseg import __version__
from medseg.errors import InputError

log = logging.getLogger(__name__)

CHECKSUM_PATTERN = re.compile(r"^(md5:[0-9a-f]{32}|sha256:[0-9a-f]{64})$")
_CHUNK = 1 << 20
_RETRYABLE = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError)


class _Interrupted(Exception):
    """The stream ended or failed before the expected size: resume from what we have."""


def parse_checksum(checksum: str) -> tuple[str, str]:
    """``"md5:abc..."`` -> ``("md5", "abc...")``; the only algorithms are md5 and sha256."""
    if not CHECKSUM_PATTERN.match(checksum or ""):
        raise InputError(None, f"checksum '{checksum}' must look like md5:<32 hex> or sha256:<64 hex>")
    algorithm, value = checksum.split(":", 1)
    return algorithm, value


def file_checksum(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def part_path(destination: Path) -> Path:
    return destination.with_name(destination.name + ".part")


@contextlib.contextmanager
def _open_stream(url: str, offset: int, timeout: float) -> Iterator[tuple[object, int, int | None]]:
    """Yield ``(readable, start, total)``: the byte stream starting at ``start`` (0 if the server ignored Range)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        local = Path(url2pathname(parsed.path))
        if not local.is_file():
            raise InputError(url, "file does not exist")
        total = local.stat().st_size
        start = offset if offset <= total else 0
        with open(local, "rb") as handle:
            handle.seek(start)
            yield handle, start, total
        return
    if parsed.scheme not in ("http", "https"):
        raise InputError(url, f"unsupported URL scheme '{parsed.scheme}'; use https://, http:// or file://")
    headers = {"User-Agent": f"medseg/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        if response.status == 206:
            match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                raise InputError(url, f"server answered an unexpected Content-Range '{response.headers.get('Content-Range')}'")
            total = int(match.group(2)) if match.group(2) != "*" else None
            yield response, offset, total
        else:
            if offset:
                log.info("server ignored the Range request; restarting %s from the beginning", url)
            yield response, 0, int(length) if length is not None else None


def _transfer(url: str, part: Path, timeout: float, on_bytes) -> int | None:
    """Append the rest of ``url`` to ``part``; return the total size when known."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        with _open_stream(url, offset, timeout) as (stream, start, total):
            on_bytes(start, total, reset=True)
            with open(part, "r+b" if part.exists() else "wb") as handle:
                handle.seek(start)
                handle.truncate()
                while True:
                    block = stream.read(_CHUNK)  # type: ignore[attr-defined]
                    if not block:
                        break
                    handle.write(block)
                    on_bytes(len(block), total)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left to send: the part file is already complete (or wrong)
            return offset
        if error.code in (408, 429, 500, 502, 503, 504):
            raise _Interrupted(f"HTTP {error.code}") from error
        raise InputError(url, f"download refused: HTTP {error.code} {error.reason}") from error
    except InputError:
        raise
    except _RETRYABLE as error:
        raise _Interrupted(str(error)) from error
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Interrupted(f"stream ended at {size} of {total} bytes")
    return total


def _verify(url: str, path: Path, checksum: str | None, size_bytes: int | None) -> None:
    """Raise (after deleting ``path``) when the size or checksum is not the expected one."""
    problem = None
    if size_bytes is not None and path.stat().st_size != size_bytes:
        problem = f"size mismatch: expected {size_bytes} bytes, got {path.stat().st_size}"
    elif checksum:
        algorithm, expected = parse_checksum(checksum)
        actual = file_checksum(path, algorithm)
        if actual != expected:
            problem = f"checksum mismatch: expected {algorithm} {expected}, got {actual}"
    if problem:
        path.unlink(missing_ok=True)
        raise InputError(url, f"{problem}; the downloaded file was deleted (the source changed, or the file was corrupted or tampered with)")


class _Bar:
    """Adapter from byte counts to a rich progress task (or nothing)."""

    def __init__(self, progress, description: str):
        self.progress = progress
        self.task = None if progress is None else progress.add_task(description, total=None)

    def __call__(self, count: int, total: int | None, reset: bool = False) -> None:
        if self.progress is None:
            return
        if reset:
            self.progress.update(self.task, completed=count, total=total)
        else:
            self.progress.advance(self.task, count)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.remove_task(self.task)


def make_progress():
    """A rich progress display for byte transfers, on the CLI console."""
    from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    from medseg.logging_setup import new_progress

    return new_progress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())


def download(url: str, destination: str | Path, checksum: str | None = None, size_bytes: int | None = None,
             progress=None, retries: int = 5, timeout: float = 60.0, retry_wait_s: float = 2.0) -> Path:
    """Download ``url`` to ``destination`` (resuming ``destination.part``), verify, rename atomically.

    ``checksum`` is ``"md5:<hex>"`` or ``"sha256:<hex>"``; ``None`` means the caller accepts an
    unverified file (say so to the user). ``progress`` is ``True`` for a progress bar, a rich
    ``Progress`` to add a task to, or ``None``/``False`` for none. An existing destination whose
    checksum matches is kept without any network access.
    """
    destination = Path(destination)
    if checksum:
        parse_checksum(checksum)
    if destination.exists():
        if not checksum and size_bytes is None:
            log.info("%s already present (no checksum to verify it against)", destination)
            return destination
        try:
            _verify(url, destination, checksum, size_bytes)
            log.info("%s already present and verified", destination)
            return destination
        except InputError:
            log.warning("%s did not match its checksum; downloading it again", destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(destination)
    own = progress is True
    display = make_progress() if own else (progress or None)
    if own:
        display.start()
    bar = _Bar(display, destination.name)
    try:
        for attempt in range(retries + 1):
            try:
                _transfer(url, part, timeout, bar)
                break
            except _Interrupted as error:
                if attempt == retries:
                    raise InputError(url, f"download failed after {retries + 1} attempts ({error}); rerun the same command to resume from {part.name}") from error
                log.warning("download interrupted (%s); resuming (attempt %d of %d)", error, attempt + 2, retries + 1)
                time.sleep(retry_wait_s * (attempt + 1))
    finally:
        bar.close()
        if own:
            display.stop()
    _verify(url, part, checksum, size_bytes)
    os.replace(part, destination)
    log.info("downloaded %s (%s)", destination, "verified " + checksum.split(":")[0] if checksum else "no checksum available")
    return destination

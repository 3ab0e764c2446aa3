"""Headless Chromium for the PDF version of a report (and for the tests that render it).

Each call gets a fresh temporary profile and the flags that keep Chromium offline and quiet
(no sandbox for containers, no GPU, no background network, no first-run setup). The PDF has no
browser header/footer, which would otherwise print the file's path and the date on every page.
Install on Debian/Ubuntu with ``apt-get install -y chromium``; set MEDSEG_CHROMIUM to use another binary.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from medseg.errors import MedsegError
from medseg.io.atomic import atomic_path

log = logging.getLogger(__name__)

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--mute-audio",
)  # fmt: skip
INSTALL_HINT = "install it with `apt-get install -y chromium` (Debian/Ubuntu) or set MEDSEG_CHROMIUM to a Chromium/Chrome binary"


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary: $MEDSEG_CHROMIUM, else the first of BINARIES on PATH."""
    override = os.environ.get("MEDSEG_CHROMIUM")
    if override:
        return override if Path(override).is_file() else shutil.which(override)
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    return None


def run_chromium(arguments: list[str], html: Path, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
    """Run headless Chromium on a local HTML file with ``arguments``; MedsegError when unavailable or failing."""
    binary = find_chromium()
    if binary is None:
        raise MedsegError(f"Chromium is needed to render the report: {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="medseg-chromium-") as profile:
        command = [binary, *FLAGS, f"--user-data-dir={profile}", *arguments, Path(html).resolve().as_uri()]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as error:
            raise MedsegError(f"Chromium did not finish rendering within {timeout_s:g} s") from error
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] or ["no message"]
        raise MedsegError(f"Chromium failed (exit {result.returncode}): {detail[0][:200]}")
    return result


def print_pdf(html: Path, pdf: Path, timeout_s: float = 120.0) -> Path:
    """Print ``html`` to ``pdf`` (atomically) as headless Chromium lays it out for printing."""
    pdf = Path(pdf)
    with atomic_path(pdf) as temporary:
        run_chromium([f"--print-to-pdf={temporary}", "--no-pdf-header-footer", "--print-to-pdf-no-header"], html, timeout_s)
        if not temporary.is_file() or temporary.stat().st_size == 0:
            raise MedsegError("Chromium wrote no PDF")
    return pdf


def screenshot(html: Path, png: Path, width: int = 1400, height: int = 4000, timeout_s: float = 120.0) -> Path:
    """PNG of the first ``width`` x ``height`` pixels of the rendered page."""
    run_chromium([f"--screenshot={Path(png).resolve()}", f"--window-size={width},{height}"], html, timeout_s)
    return Path(png)


def dump_dom(html: Path, timeout_s: float = 120.0) -> str:
    """The DOM after Chromium parsed and laid out the page, serialised as HTML."""
    return run_chromium(["--dump-dom"], html, timeout_s).stdout

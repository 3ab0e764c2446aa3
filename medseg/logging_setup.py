"""One output setup for the CLI: what goes to stdout and stderr, when, and that it is printed literally.

Output discipline (the contract `medseg/cli/main.py` keeps):

* Command results (tables, summaries) go to stdout, logs, progress and errors to stderr.
* Everything is printed as literal text: the consoles have rich markup and emoji codes off, so a
  file named ``[/red]x.nii.gz`` or ``:x:.nii`` prints as it is. Styling is explicit (:class:`Text`).
* INFO logs only with ``-v`` (DEBUG with ``--debug``).
* WARNINGs are printed as they happen when stderr is a terminal or with ``-v``/``--debug``.
  Otherwise (a log file, CI, a pipe) they are *held* and printed when the command ends; a command
  that fails drops them and its one ``error:`` line says how many were held, so a failed run
  writes exactly one line to stderr and ``-v`` shows the rest.
* Progress bars only on a terminal, where they are drawn in place; never on a pipe or a file.
* Tables printed to a pipe or file are as wide as their content, so identifiers never wrap.
"""

from __future__ import annotations

import logging
import re
import sys

from rich.console import Console, ConsoleRenderable
from rich.logging import RichHandler
from rich.measure import Measurement
from rich.progress import Progress, ProgressColumn
from rich.table import Table

console = Console(markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False)

NOISY_LIBRARIES = ("pydicom", "nibabel", "PIL", "matplotlib")
HELD_LIMIT = 200  # held warnings kept in memory; later ones are only counted
_LINE_BREAKS = re.compile(r"[ \t]*[\r\n\v\f]+[ \t]*")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def one_line(text: str) -> str:
    """One line of literal text: line breaks (YAML, tar and torch messages span lines) become a space,
    other control characters (an escape sequence in a file name) are shown as ``\\xNN``."""
    flat = _LINE_BREAKS.sub(" ", str(text).strip())
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", flat)


class OneLineFormatter(logging.Formatter):
    """``warning: message`` on one line, for stderr that is not a terminal (tracebacks only with --debug)."""

    def __init__(self, tracebacks: bool = False) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {one_line(record.getMessage())}"
        if self.tracebacks and record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class HeldMessages(logging.Handler):
    """Keeps warning records until the command ends: printed on success, dropped (and counted) on failure."""

    def __init__(self, target: logging.Handler, limit: int = HELD_LIMIT) -> None:
        super().__init__(level=logging.WARNING)
        self.target, self.limit = target, limit
        self.records: list[logging.LogRecord] = []
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.records) < self.limit:
            self.records.append(record)

    def replay(self) -> None:  # not release(): that is Handler's lock
        """Print what was held (the command succeeded, or ended without an ``error:`` line)."""
        for record in self.records:
            self.target.handle(record)
        if self.count > len(self.records):
            self.target.handle(logging.LogRecord("medseg", logging.WARNING, "", 0, f"{self.count - len(self.records)} more warning(s) not shown; rerun with -v", None, None))
        self.records, self.count = [], 0

    def discard(self) -> int:
        """Forget what was held (the command failed); returns how many there were."""
        count, self.records, self.count = self.count, [], 0
        return count


_held: HeldMessages | None = None


def configure(verbose: bool = False, debug: bool = False) -> None:
    """Route logs to stderr following the output discipline above (called once per CLI invocation)."""
    global _held
    terminal = err_console.is_terminal
    if terminal:
        shown: logging.Handler = RichHandler(console=err_console, show_path=debug, rich_tracebacks=debug, markup=False)
    else:
        shown = logging.StreamHandler(sys.stderr)
        shown.setFormatter(OneLineFormatter(tracebacks=debug))
    shown.setLevel(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)
    _held = None if (terminal or verbose or debug) else HeldMessages(shown)
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING,
                        format="%(message)s", handlers=[_held or shown], force=True)
    # medseg's own records always reach the handlers (tests' caplog sees INFO); the handler decides what is shown.
    logging.getLogger("medseg").setLevel(logging.DEBUG if debug else logging.INFO)
    logging.captureWarnings(True)  # Python warnings (torch, numpy) follow the same rules as log warnings
    for noisy in NOISY_LIBRARIES:
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # Soft wrapping: a long path printed to a pipe stays on one line.
    for each in (console, err_console):
        each.soft_wrap = not each.is_terminal


def release_held() -> None:
    if _held is not None:
        _held.replay()


def drop_held() -> int:
    return _held.discard() if _held is not None else 0


def new_progress(*columns: str | ProgressColumn, enabled: bool = True, transient: bool = True, target: Console | None = None) -> Progress:
    """A rich progress display that exists only on a terminal: on a pipe or file it is disabled, so no frame is left behind."""
    target = target or err_console
    return Progress(*columns, console=target, disable=not (enabled and target.is_terminal), transient=transient)


def print_table(table: Table, target: Console | None = None) -> None:
    """Print ``table``; to a pipe or a file it gets the width of its content, so no cell (case id, path) wraps."""
    target = target or console
    if target.is_terminal:
        target.print(table)
        return
    wide = target.options.update_width(1 << 14)
    width = max(Measurement.get(target, wide, table).maximum, _title_width(table))
    Console(file=target.file, width=max(width, 20), markup=False, emoji=False, soft_wrap=True,
            color_system=None, highlight=False).print(table)


def _title_width(table: ConsoleRenderable) -> int:
    title = getattr(table, "title", None)
    return len(str(title)) + 4 if title else 0

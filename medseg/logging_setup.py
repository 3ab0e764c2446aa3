"""One logging setup for the CLI: rich handler on stderr, quiet libraries."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler

# Command results (tables, summaries) go to stdout; logs and errors to stderr.
console = Console()
err_console = Console(stderr=True)


def configure(verbose: bool = False, debug: bool = False) -> None:
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=debug, rich_tracebacks=debug)],
        force=True,
    )
    logging.getLogger("medseg").setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("pydicom", "nibabel", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

"""Errors that the CLI turns into one-line messages and exit code 2.

Anything raised as a :class:`MedsegError` is a problem with the user's input or setup, not a bug:
the CLI prints ``error: <message>`` without a traceback (unless ``--debug``).
"""

from __future__ import annotations

from pathlib import Path


def brief(error: BaseException, limit: int = 200) -> str:
    """An exception's text on one short line (library messages often span several), or its type when it has none."""
    return " ".join(str(error).split())[:limit] or type(error).__name__


class MedsegError(Exception):
    """Base class for expected, user-facing failures."""

    exit_code = 2


class InputError(MedsegError):
    """A file or folder the user gave cannot be used; the message names it and says why."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class ConfigError(MedsegError):
    """A configuration value or override is invalid."""

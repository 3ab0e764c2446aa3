"""Run one `medseg` command on a hostile input in its own process and check the one-line-error promise.

Each hostile case runs in a fresh interpreter so that its peak resident memory can be measured on its own
(the child's own VmHWM at exit, written to a side file) and so that a crash cannot take the test
session with it. Stderr is a pipe, as in a CI log: that is where extra log lines and wrapped tables show up.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RSS_LIMIT_MB = 500.0

# Linux keeps ru_maxrss across exec, so in a child it is at least the *parent's* RSS at spawn time (a pytest
# process holding 600 MB made every child "peak" at 600 MB). VmHWM belongs to the child's own address space.
_DRIVER = (
    "import atexit, os, resource, sys\n"
    "def _peak_kb():\n"
    "    try:\n"
    "        with open('/proc/self/status') as status:\n"
    "            return next(int(line.split()[1]) for line in status if line.startswith('VmHWM:'))\n"
    "    except (OSError, StopIteration, ValueError):\n"
    "        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "def _rss():\n"
    "    with open(os.environ['MEDSEG_HOSTILE_RSS'], 'w') as f:\n"
    "        f.write(str(_peak_kb()))\n"
    "atexit.register(_rss)\n"
    "from medseg.cli.main import main\n"
    "main(sys.argv[1:])\n"
)


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    peak_rss_mb: float

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_medseg(args: list, cwd: Path, timeout: float = 300.0, env: dict | None = None) -> Outcome:
    """`medseg ARGS` in a subprocess with stdout/stderr piped; returns exit code, output and peak RSS (MB)."""
    rss_file = Path(cwd) / ".hostile_rss"
    full_env = {**os.environ, "MEDSEG_HOSTILE_RSS": str(rss_file), "COLUMNS": "80", **(env or {})}
    full_env.pop("FORCE_COLOR", None)
    result = subprocess.run(
        [sys.executable, "-c", _DRIVER, *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env,
    )
    peak_kb = float(rss_file.read_text()) if rss_file.exists() else float("nan")
    rss_file.unlink(missing_ok=True)
    return Outcome(result.returncode, result.stdout, result.stderr, peak_kb / 1024.0)


def assert_refused(
    outcome: Outcome,
    names: str | Path,
    expected: str | None = None,
    out_dir: Path | None = None,
    rss_limit_mb: float = DEFAULT_RSS_LIMIT_MB,
) -> None:
    """Exit 2, exactly one `error:` line on stderr that names the file, nothing left in `out_dir`, RSS bounded."""
    name = names.name if isinstance(names, Path) else str(names)
    lines = outcome.error_lines
    assert outcome.code == 2, f"exit {outcome.code}, stderr: {outcome.stderr!r}"
    assert len(lines) == 1, f"expected exactly one stderr line, got {len(lines)}: {outcome.stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert "internal error" not in lines[0], lines[0]
    assert name in lines[0], f"{name!r} not named in {lines[0]!r}"
    if expected is not None:
        assert expected in lines[0], f"{expected!r} not in {lines[0]!r}"
    if out_dir is not None and Path(out_dir).exists():
        left = sorted(p.name for p in Path(out_dir).rglob("*"))
        assert left == [], f"output left behind: {left}"
    assert outcome.peak_rss_mb < rss_limit_mb, f"peak RSS {outcome.peak_rss_mb:.0f} MB >= {rss_limit_mb:.0f} MB"

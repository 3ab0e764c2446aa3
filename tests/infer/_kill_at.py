"""Run `medseg` and SIGKILL it at one point of a case write: ``python _kill_at.py WHEN NAME -- medseg-args``.

WHEN is ``staged`` (right after NAME is renamed into a staging folder), ``published`` (right after NAME is
renamed into the output folder) or ``before`` (right before NAME is renamed into the output folder). A real
kill -9 of the process, with nothing of medseg's own changed: only ``os.replace`` is watched.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def main() -> None:
    when, name, separator, *args = sys.argv[1:]
    assert separator == "--" and when in ("staged", "published", "before")
    real_replace = os.replace

    def replace(source, destination, *rest, **keywords):
        target = Path(destination)
        in_staging = target.parent.name.startswith(".") and target.parent.name.endswith(".tmp")
        hit = target.name == name and in_staging == (when == "staged")
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(source, destination, *rest, **keywords)
        if hit:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    from medseg.cli import main as cli

    cli.main(args)


if __name__ == "__main__":
    main()

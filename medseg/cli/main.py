"""The ``medseg`` command: global options, error handling, and command registration.

Expected problems (:class:`~medseg.errors.MedsegError`) print one ``error:`` line and exit 2;
``--debug`` shows the traceback instead. The line is printed literally (never as rich markup) and
flattened to one line; warnings held back while the command ran are dropped and counted in it (see
:mod:`medseg.logging_setup`). Command modules each expose ``register(app)``.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer
from rich.text import Text

from medseg import __version__
from medseg.errors import MedsegError
from medseg.logging_setup import configure, drop_held, err_console, one_line, release_held

# Each module owns one command or command group and exposes register(app).
COMMAND_MODULES = (
    "medseg.cli.io_cmds",
    "medseg.cli.data_cmds",
    "medseg.cli.dataset_cmds",
    "medseg.cli.train_cmd",
    "medseg.cli.infer_cmd",
    "medseg.cli.evaluate_cmd",
    "medseg.cli.report_cmd",
    "medseg.cli.bench_cmd",
    "medseg.cli.demo_cmd",
    "medseg.cli.export_cmd",
)

app = typer.Typer(
    name="medseg",
    help=(
        "Medical image segmentation from DICOM/NIfTI to geometry-exact masks and clinical reports.\n\n"
        "Start with `medseg demo` (the whole pipeline on a synthetic CT dataset), "
        "`medseg info SCAN` to inspect a volume or DICOM folder, and `medseg convert IN OUT`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medseg {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and debug logs instead of one-line errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    _state["debug"] = debug
    configure(verbose=verbose, debug=debug)


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def _fail(message: str, code: int) -> None:
    """The one ``error:`` line: literal text, one line, with a count of the warnings it replaces."""
    held = drop_held()
    if held:
        message = f"{message} ({held} warning(s) before it not shown; rerun with -v to see them)"
    err_console.print(Text.assemble(("error:", "bold red"), " ", one_line(message)), highlight=False, soft_wrap=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="medseg", standalone_mode=True)
    except MedsegError as error:
        if _state["debug"]:
            raise
        _fail(str(error), error.exit_code)
    except MemoryError:
        if _state["debug"]:
            raise
        _fail("out of memory; try a smaller batch or patch size, or --device cpu for huge volumes", 3)
    except (typer.Exit, typer.Abort, SystemExit):
        release_held()  # success, or an exit without an error: line (e.g. `dataset check` listing problems)
        raise
    except Exception as error:  # a bug: keep the one-line promise, point at --debug
        if _state["debug"]:
            raise
        logging.getLogger("medseg").debug("unexpected error", exc_info=True)
        _fail(f"internal error: {type(error).__name__}: {error} (rerun with --debug for the traceback)", 1)


if __name__ == "__main__":
    main()

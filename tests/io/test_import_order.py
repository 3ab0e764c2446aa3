"""The DICOM modules never import the dispatcher that imports them (no cycle), and every io module imports alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import medseg.io

IO_DIR = Path(medseg.io.__file__).parent
MODULES = sorted(f"medseg.io.{path.stem}" for path in IO_DIR.glob("*.py") if path.stem != "__init__")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at top level or inside functions (lazy imports count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def io_imports(module: str) -> set[str]:
    """The medseg.io modules that ``module`` imports."""
    return {name for name in imported_modules(IO_DIR / f"{module.rsplit('.', 1)[1]}.py") if name in MODULES}


def test_nothing_readers_reaches_imports_readers_back():
    """readers dispatches to the DICOM reader (lazily); that reader, and all it imports, must not import readers."""
    reached, todo = set(), ["medseg.io.readers"]
    while todo:
        for name in io_imports(todo.pop()) - reached:
            reached.add(name)
            todo.append(name)
    assert "medseg.io.dicom" in reached
    back = sorted(name for name in reached - {"medseg.io.readers"} if "medseg.io.readers" in io_imports(name))
    assert back == [], f"import cycle through medseg.io.readers: {back}"


def test_readers_finds_dicom_files_without_the_dicom_reader():
    from medseg.io import dicom_files, readers

    assert readers.is_dicom_file is dicom_files.is_dicom_file  # re-exported for existing callers, defined once


@pytest.mark.parametrize("reverse", [False, True], ids=["dicom_first", "readers_first"])
def test_io_modules_import_in_a_fresh_interpreter_in_either_order(reverse):
    order = MODULES[::-1] if reverse else MODULES
    assert (order.index("medseg.io.dicom") < order.index("medseg.io.readers")) != reverse
    script = f"import importlib\nfor name in {order!r}:\n    importlib.import_module(name)\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]

from tests.cli.conftest import run_cli  # noqa: F401  (in-process `medseg ...` runner)

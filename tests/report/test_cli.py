"""`medseg report` through typer, with its own app and register(app)."""

import typer
from typer.testing import CliRunner

from medseg.cli.report_cmd import register
from medseg.errors import ConfigError, InputError


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keep `report` a subcommand, as in the real CLI
        pass

    return app


def test_report_command(synthetic, tmp_path):
    out = tmp_path / "out" / "report.html"
    args = ["report", str(synthetic.eval_dir), "-o", str(out), "--images", str(synthetic.images), "--max-cases", "1"]
    args += ["--title", "Fold 0 validation", "--note", "Synthetic phantoms.", "--set", "report.panel_height_px=160", "--set", "report.plot_metrics=[dice,hd95]"]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and out.is_file()
    html = out.read_text()
    assert "<title>Fold 0 validation</title>" in html and "Synthetic phantoms." in html
    assert html.count('<figure id="case-') == 1 and 'id="plot-dice"' in html and 'id="plot-nsd"' not in html


def test_report_command_errors(synthetic, tmp_path):
    result = CliRunner().invoke(_app(), ["report", str(tmp_path / "missing"), "-o", str(tmp_path / "r.html")])
    assert isinstance(result.exception, InputError) and "evaluation folder does not exist" in str(result.exception)
    result = CliRunner().invoke(_app(), ["report", str(synthetic.eval_dir), "-o", str(tmp_path / "r.html"), "--set", "no_such_key=1"])
    assert isinstance(result.exception, ConfigError) and "unknown key" in str(result.exception)
    assert not (tmp_path / "r.html").exists()


def test_report_help_teaches():
    result = CliRunner().invoke(_app(), ["report", "--help"])
    assert result.exit_code == 0
    assert "--include-phi" in result.output and "Examples" in result.output and "medseg evaluate" in result.output

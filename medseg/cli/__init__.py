"""Thin typer commands over medseg's Python API. Each module here registers one command group."""

"""The training bar shows real optimizer steps and speed, also under a time budget (where the bar follows wall time)."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console

import medseg.logging_setup as logging_setup
from medseg.train.progress import TrainingProgress


def _render(monkeypatch, updates) -> str:
    buffer = io.StringIO()
    terminal = Console(file=buffer, force_terminal=True, width=200, color_system=None)
    monkeypatch.setattr(logging_setup, "err_console", terminal)
    with TrainingProgress(enabled=True, total=250_000) as progress:
        for epoch, fraction, iteration in updates:
            progress.update(epoch, fraction, iteration, loss=0.5, lr=1e-3)
            time.sleep(0.05)
        progress.progress.refresh()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue())
    frames = [line for line in re.split(r"[\r\n]", plain) if " it/s" in line]
    return frames[-1]


def test_time_budgeted_bar_shows_the_real_iteration_count(monkeypatch):
    # Under a time budget 10% of the run can be done after 30 steps; the bar must not claim 25,000 of them.
    last = _render(monkeypatch, [(0, 0.05, 20), (0, 0.10, 30)])
    assert "30/250000 it" in last
    assert "25000/" not in last and "25000.0" not in last


def test_speed_is_steps_per_second_not_bar_units(monkeypatch):
    last = _render(monkeypatch, [(0, 0.0, 0), (0, 0.5, 2), (0, 0.9, 4)])
    speed = float(last.split(" it/s")[0].split()[-1])
    assert 0 < speed < 100  # 4 steps in about 0.1 s: tens per second at most, never thousands

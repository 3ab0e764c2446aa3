"""Training records: CSV (always), TensorBoard (optional) and a training-curve PNG."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

from medseg.io.atomic import atomic_path

log = logging.getLogger(__name__)


class Logbook:
    """One row per epoch; columns appear as they are first logged."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, resume_rows: list[dict] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.rows: list[dict] = list(resume_rows or [])
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            except Exception as error:  # tensorboard is optional; the CSV and PNG are the record
                log.warning("TensorBoard logging disabled (%s)", error)

    def log_epoch(self, row: dict) -> None:
        self.rows.append(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)) and not math.isnan(value):
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()
        self._write_csv()

    def _write_csv(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [key for key in row if key not in columns]
        with atomic_path(self.run_dir / "training_log.csv") as temporary:
            with open(temporary, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(self.rows)

    def plot(self) -> Path | None:
        """Loss and validation Dice against epoch, the picture one looks at first."""
        if not self.rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [row["epoch"] for row in self.rows]
        figure, (loss_axis, dice_axis) = plt.subplots(1, 2, figsize=(11, 4))
        loss_axis.plot(epochs, [row.get("train_loss", math.nan) for row in self.rows], label="train loss")
        loss_axis.set_xlabel("epoch")
        loss_axis.set_ylabel("Dice + CE loss")
        loss_axis.grid(alpha=0.3)
        loss_axis.legend()
        dice_keys = sorted({key for row in self.rows for key in row if key.startswith("val_dice_")})
        for key in dice_keys:
            points = [(row["epoch"], row[key]) for row in self.rows if key in row and not math.isnan(row[key])]
            if points:
                dice_axis.plot(*zip(*points), marker="o", label=key.removeprefix("val_dice_"))
        points = [(row["epoch"], row["val_ema_dice"]) for row in self.rows if "val_ema_dice" in row]
        if points:
            dice_axis.plot(*zip(*points), linestyle="--", color="black", label="EMA mean (best-checkpoint metric)")
        dice_axis.set_xlabel("epoch")
        dice_axis.set_ylabel("validation Dice")
        dice_axis.set_ylim(0, 1)
        dice_axis.grid(alpha=0.3)
        dice_axis.legend(fontsize=8)
        figure.tight_layout()
        path = self.run_dir / "training_curves.png"
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=110, format="png")
        plt.close(figure)
        return path

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

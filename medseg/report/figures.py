"""Report plots as inline PNG data URIs: box/strip plots per metric and lesion sensitivity by size.

Figures are built on :class:`matplotlib.figure.Figure` directly (the Agg canvas, no pyplot), so the
report never touches the user's interactive backend or global state. PNGs are quantised to a
palette (still PNG) to keep the single-file HTML small.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

METRIC_TITLES = {
    "dice": "Dice",
    "iou": "IoU (Jaccard)",
    "nsd": "NSD (normalised surface Dice)",
    "hd": "Hausdorff distance (mm)",
    "hd95": "HD95 (mm)",
    "assd": "ASSD (mm)",
    "abs_volume_error_ml": "absolute volume error (mL)",
    "rel_volume_error": "relative volume error (%)",
    "volume_pred_ml": "predicted volume (mL)",
    "volume_ref_ml": "reference volume (mL)",
}
BOUNDED = {"dice", "iou", "nsd"}
MIN_BOX = 3  # fewer points than this: a box would pretend a spread that is not there


def png_data_uri(fig: Figure, palette_colors: int = 0, tight: bool = False) -> str:
    """Render ``fig`` to PNG (optionally palette-quantised, optionally cropped to its content) as a ``data:`` URI."""
    buffer = io.BytesIO()
    extra = {"bbox_inches": "tight", "pad_inches": 0.08} if tight else {}
    fig.savefig(buffer, format="png", dpi=fig.dpi, facecolor=fig.get_facecolor(), metadata={"Software": None}, **extra)
    data = buffer.getvalue()
    if palette_colors:
        from PIL import Image

        picture = Image.open(io.BytesIO(data)).convert("RGB").quantize(colors=palette_colors, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", optimize=True)
        data = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _values(rows: list[dict], metric: str) -> np.ndarray:
    values = np.array([float(row.get(metric, math.nan)) for row in rows], dtype=float)
    values = values[np.isfinite(values)]
    return values * 100 if metric == "rel_volume_error" else values


def metric_figure(metric: str, labels: list[str], rows_by_label: dict[str, list[dict]], dpi: int = 90, seed: int = 0) -> str:
    """Box (n >= 3) and strip plot of one metric, one column per label; rows are cases.csv rows."""
    data = [_values(rows_by_label.get(label, []), metric) for label in labels]
    width = float(np.clip(1.2 + 0.24 * len(labels), 3.6, 22.0))
    longest = max((len(label) for label in labels), default=4)
    rotate = len(labels) * max(longest, 4) > 8 * width  # horizontal names would overlap
    fig = Figure(figsize=(width, 2.2), dpi=dpi, facecolor="white")
    axis = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    positions = np.arange(1, len(labels) + 1)
    boxed = [(position, values) for position, values in zip(positions, data) if values.size >= MIN_BOX]
    if boxed:
        axis.boxplot(
            [values for _, values in boxed], positions=[position for position, _ in boxed], widths=0.6, showfliers=False,
            patch_artist=True, boxprops={"facecolor": "#dbe9f6", "edgecolor": "#4a6fa5"}, medianprops={"color": "#1f3b63", "linewidth": 1.5},
            whiskerprops={"color": "#4a6fa5"}, capprops={"color": "#4a6fa5"},
        )  # fmt: skip
    rng = np.random.default_rng(seed)
    for position, values in zip(positions, data):
        if values.size:
            jitter = rng.uniform(-0.17, 0.17, values.size) if values.size > 1 else np.zeros(1)
            axis.scatter(position + jitter, values, s=10 if values.size > 30 else 16, color="#d9480f", alpha=0.7, linewidths=0, zorder=3)
            if values.size > 1:
                axis.scatter([position], [values.mean()], marker="D", s=18, facecolor="white", edgecolor="black", linewidths=0.8, zorder=4)
    finite = np.concatenate([values for values in data if values.size]) if any(values.size for values in data) else np.zeros(0)
    if metric in BOUNDED:
        low = min(0.0, float(finite.min())) if finite.size else 0.0
        axis.set_ylim(max(low - 0.03, -0.03), 1.03)
    elif finite.size and np.ptp(finite) > 0:
        magnitudes = np.abs(finite[finite != 0])
        if magnitudes.size and magnitudes.max() > 20 * max(np.median(magnitudes), 1e-9):
            axis.set_yscale("symlog", linthresh=10.0 if metric == "rel_volume_error" else 1.0)
    if metric == "rel_volume_error":
        axis.axhline(0, color="#888888", linewidth=0.8)
        axis.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    axis.set_xticks(positions)
    axis.set_xticklabels(labels, rotation=60 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
    axis.set_xlim(0.4, len(labels) + 0.6)
    axis.tick_params(axis="y", labelsize=8)
    axis.grid(axis="y", color="#e5e5e5", linewidth=0.7)
    axis.set_axisbelow(True)
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)
    axis.set_title(METRIC_TITLES.get(metric, metric), fontsize=10, loc="left")
    return png_data_uri(fig, 0, tight=True)


def wilson_interval(hits: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound for small counts, unlike the normal approximation)."""
    if total == 0:
        return math.nan, math.nan
    p = hits / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def size_bin_figure(by_label: dict[str, dict[str, dict]], dpi: int = 90) -> str:
    """Sensitivity per reference-lesion size bin, one bar group per lesion label, Wilson 95% intervals."""
    labels = list(by_label)
    bins = list(next(iter(by_label.values())).keys()) if by_label else []
    width_in = float(np.clip(2.0 + 0.9 * len(bins) * max(len(labels), 1) ** 0.5, 5.0, 12.0))
    fig = Figure(figsize=(width_in, 2.6), dpi=dpi, facecolor="white")
    axis = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    colors = ["#4a6fa5", "#d9480f", "#2b8a3e", "#862e9c", "#e67700"]
    bar = 0.8 / max(len(labels), 1)
    centres = np.arange(len(bins))
    for index, label in enumerate(labels):
        offsets = centres - 0.4 + bar * (index + 0.5)
        legend_label: str | None = label
        for offset, name in zip(offsets, bins):
            entry = by_label[label][name]
            total, hits = int(entry["lesions"]), int(entry["detected"])
            if total == 0:
                axis.text(offset, 0.02, "none", ha="center", va="bottom", fontsize=7, color="#888888", rotation=90)
                continue
            value = hits / total
            low, high = wilson_interval(hits, total)
            axis.bar(offset, value, width=bar * 0.92, color=colors[index % len(colors)], label=legend_label)
            legend_label = None
            axis.errorbar(offset, value, yerr=[[max(value - low, 0.0)], [max(high - value, 0.0)]], color="black", capsize=2, linewidth=0.8)
            axis.text(offset, min(high, 1.0) + 0.02, f"{hits}/{total}", ha="center", va="bottom", fontsize=7)
    axis.set_xticks(centres)
    axis.set_xticklabels(bins, fontsize=8)
    axis.set_ylim(0, 1.15)
    axis.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    axis.set_ylabel("sensitivity", fontsize=9)
    axis.set_xlabel("reference lesion volume", fontsize=9)
    axis.tick_params(axis="y", labelsize=8)
    axis.grid(axis="y", color="#e5e5e5", linewidth=0.7)
    axis.set_axisbelow(True)
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)
    if len(labels) > 1:
        axis.legend(fontsize=8, frameon=False, loc="upper left")
    return png_data_uri(fig, 0, tight=True)

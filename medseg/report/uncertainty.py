"""Uncertainty overlays of `medseg report`: the error overlay's three views coloured by predictive entropy.

`medseg infer --save-uncertainty` writes ``<case>_entropy.nii.gz`` beside ``<case>.nii.gz``
(normalised entropy, nats / ln(K), in [0, 1]). When the report finds that file beside a case's
prediction, the case's figure gets a second image: the same slices, centre and crop as the error
overlay, the entropy in a fixed colour scale (0 to 1, so cases compare), transparent where the
model is certain, with the predicted contours and the largest disagreement (dashed) on top. The
map is sampled through its own affine like the image, so any storage order lines up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D

from medseg.errors import InputError
from medseg.infer.outputs import ENTROPY_SUFFIX, MASK_SUFFIXES
from medseg.io.readers import read_volume
from medseg.io.volume import Volume
from medseg.report.config import ReportConfig
from medseg.report.figures import png_data_uri
from medseg.report.overlays import Panel, display_plane, draw_contour, image_overlaps, panel_figure, sample_image

log = logging.getLogger(__name__)

COLORMAP = "inferno"
OPAQUE_AT = 0.5  # entropy from which the colour is fully drawn; below it fades out towards 0 (certain)
MAX_ALPHA = 0.85
FOOTER_PX = 34.0  # room for the colour bar under the legend
ENTROPY_NOTE = ("Uncertainty views: the same slices coloured by predictive entropy of the averaged softmax, nats / ln(K) "
                "(0 = certain, 1 = uniform over the K classes), transparent where certain; dashed: the largest disagreement.")


@dataclass
class UncertaintyFigure:
    uri: str | None
    caption: str | None
    note: str | None


def entropy_beside(prediction: Path) -> Path | None:
    """The entropy map `medseg infer --save-uncertainty` wrote beside ``prediction`` (``<case>_entropy.nii[.gz]``), if any."""
    name = prediction.name
    suffix = next((s for s in MASK_SUFFIXES if name.lower().endswith(s)), None)
    if suffix is None:
        return None
    for extension in MASK_SUFFIXES:
        candidate = prediction.with_name(name[: -len(suffix)] + ENTROPY_SUFFIX + extension)
        if candidate.is_file():
            return candidate
    return None


def _planes(panels: list[Panel], entropy: Volume) -> list[np.ndarray]:
    """The entropy on each panel's pixels (sampled through the two affines; 0 outside the map)."""
    planes = []
    for panel in panels:
        if panel.index is None or panel.affine is None:
            raise ValueError("panels without their voxel index cannot be resampled")
        values = display_plane(sample_image(entropy, panel.affine, panel.index), panel.plane)
        planes.append(np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0))
    return planes


def _caption(entropy: Volume, pred: Volume, ref: Volume | None) -> str | None:
    """Mean entropy where prediction and reference disagree vs where they agree on a structure (same grid only)."""
    if ref is None or not (entropy.same_grid(pred) and pred.same_grid(ref)):
        return None
    wrong = pred.array != ref.array
    agreed = ~wrong & (ref.array > 0)
    parts = [f"{what} {float(entropy.array[where].mean(dtype=np.float64)):.3f} ({int(where.sum())} voxels)"
             for what, where in (("where prediction and reference disagree", wrong), ("where they agree on a structure", agreed)) if where.any()]
    return ("Mean entropy " + "; ".join(parts) + ".") if parts else None


def _draw_figure(panels: list[Panel], planes: list[np.ndarray], config: ReportConfig) -> str:
    colormap, norm = colormaps[COLORMAP], Normalize(0.0, 1.0)
    by_panel = {id(panel): plane for panel, plane in zip(panels, planes)}

    def draw(axis, panel: Panel, xs: np.ndarray, ys: np.ndarray, extent) -> None:
        values = by_panel[id(panel)]
        colours = colormap(norm(values)).astype(np.float32)
        colours[..., 3] = np.clip(values / OPAQUE_AT, 0.0, 1.0) * MAX_ALPHA
        axis.imshow(colours, extent=extent, interpolation="nearest", aspect="auto")
        for value in np.unique(panel.pred):
            if value != 0:
                draw_contour(axis, panel.pred == value, xs, ys, config.prediction_color, config.contour_width)
        draw_contour(axis, panel.error, xs, ys, "white", config.contour_width, linestyle="--")

    handles = [Line2D([], [], color=config.prediction_color, linewidth=2, label="prediction"),
               Line2D([], [], color="#444444", linewidth=1.5, linestyle="--", label="largest disagreement"),
               Line2D([], [], color="#444444", marker="+", linestyle="", markersize=8, label="slice centre")]
    fig = panel_figure(panels, config, handles, draw, footer_px=FOOTER_PX)
    width_px, height_px = fig.get_size_inches() * fig.dpi
    left, bar_px = 14.0, 220.0
    bar = fig.add_axes((left / width_px, 20 / height_px, bar_px / width_px, 7 / height_px))
    colorbar = fig.colorbar(ScalarMappable(norm, colormap), cax=bar, orientation="horizontal")
    colorbar.ax.tick_params(labelsize=7, length=2, pad=1)
    colorbar.set_ticks([0, 0.25, 0.5, 0.75, 1.0], labels=["0", "0.25", "0.5", "0.75", "1"])
    fig.text((left + bar_px + 8) / width_px, 20 / height_px, "predictive entropy, nats / ln K (0 certain, 1 uniform)",
             fontsize=7, va="bottom", ha="left", color="#333333")
    return png_data_uri(fig, config.palette_colors)


def uncertainty_figure(panels: list[Panel], entropy_path: Path, pred: Volume, config: ReportConfig, ref: Volume | None = None) -> UncertaintyFigure:
    """The uncertainty image of one case (same views as ``panels``), a caption, or a note saying why there is none."""
    try:
        entropy = read_volume(entropy_path, role="image")
    except InputError as error:
        return UncertaintyFigure(None, None, f"entropy map unreadable ({error.problem}): no uncertainty view")
    if not image_overlaps(entropy, pred):
        return UncertaintyFigure(None, None, "the entropy map does not cover the prediction in world coordinates: no uncertainty view")
    uri = _draw_figure(panels, _planes(panels, entropy), config)
    return UncertaintyFigure(uri, _caption(entropy, pred, ref), None)

"""Per-case thumbnails: axial, coronal and sagittal slices through the largest disagreement.

Label maps are reoriented to RAS first, so that "axial" is axial whatever the storage order, and
drawn in the radiological convention: the patient's right on the image left, anterior up in axial
views, superior up in coronal and sagittal views (anterior on the left in sagittal views). Pixels
keep their physical aspect ratio from the voxel spacing, and the three views share one scale.

Where to look: the largest 26-connected component of disagreement (prediction != reference over
the evaluated labels, i.e. FP or FN of some label). With many adjacent structures, thin boundary
differences join into one sprawling component whose centroid can lie anywhere, so the slices pass
through the component's *thickest* point (largest distance to agreeing voxels, in mm) instead.
With no disagreement, they pass through the centroid of the reference structures.

Overlapping regions (BraTS' whole tumour, tumour core, enhancing tumour) cannot be told apart by
voxel value, so a region-based evaluation is drawn per region instead: each voxel gets a bit per
region it belongs to, the disagreement is "some region differs", the prediction is filled and the
reference outlined in one colour per region.

The image is never reoriented or resampled as a whole: only the displayed planes are sampled from
it through the two affines, so an image on a different grid than the labels (a DICOM series in
LPS order, a finer resolution) still lines up in world coordinates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib import patheffects
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from scipy import ndimage

from medseg.io.readers import read_volume
from medseg.io.volume import Volume
from medseg.report.config import ReportConfig
from medseg.report.figures import png_data_uri

log = logging.getLogger(__name__)

RADIOLOGICAL_NOTE = (
    "Radiological convention: the patient's right is on the image left; axial views are seen from the feet with anterior up; "
    "coronal and sagittal views have superior up (sagittal: anterior on the left). Pixels keep their physical aspect ratio "
    "and the three views share one scale."
)


@dataclass(frozen=True)
class Plane:
    """One view of a RAS array: the fixed axis and the axes shown along rows and columns."""

    name: str
    fixed: int
    rows: int
    cols: int
    edges: tuple[str, str, str, str]  # letters at the left, right, top and bottom edges


# In a RAS array, axis 0 increases towards the patient's right, 1 anterior, 2 superior. Displayed
# rows and columns are both reversed (see display_plane): R on the left, A (axial) or S on top.
PLANES = (
    Plane("axial", 2, 1, 0, ("R", "L", "A", "P")),
    Plane("coronal", 1, 2, 0, ("R", "L", "S", "I")),
    Plane("sagittal", 0, 2, 1, ("A", "P", "S", "I")),
)


@dataclass
class Panel:
    """One view, ready to draw: grey image in [0, 1], label maps, error mask, pixel size, marker (mm)."""

    plane: Plane
    grey: np.ndarray
    ref: np.ndarray
    pred: np.ndarray
    error: np.ndarray
    row_mm: float
    col_mm: float
    marker_mm: tuple[float, float]  # (x, y) of the slice centre from the panel's top-left corner
    position_mm: float  # world coordinate of the slice along the fixed axis
    regions: tuple[str, ...] = ()  # region mode: ref/pred hold region bit codes (bit i = region i)
    index: tuple[slice, slice, slice] | None = None  # the voxels shown, in the RAS label array ...
    affine: np.ndarray | None = None  # ... whose affine this is (to sample other volumes on the same plane)

    @property
    def size_mm(self) -> tuple[float, float]:
        return self.grey.shape[1] * self.col_mm, self.grey.shape[0] * self.row_mm


@dataclass
class Thumbnail:
    """One case's three-view overlay and the facts its caption states."""

    case: str
    anchor: str
    image_uri: str
    centre_mm: tuple[float, float, float]
    error_ml: float
    error_labels: tuple[str, str] | None  # (reference label, predicted label) most common in the component
    window: str
    notes: list[str] = field(default_factory=list)
    uncertainty_uri: str | None = None  # the same three views coloured by predictive entropy, when a map was found
    uncertainty_caption: str | None = None


def evaluated_only(array: np.ndarray, values: list[int]) -> np.ndarray:
    """The label map with every value that was not evaluated set to 0 (a lookup table, one pass)."""
    array = np.asarray(array)
    if array.dtype.kind not in "ui":
        array = np.rint(array).astype(np.int64)
    top = max(int(array.max()) if array.size else 0, max(values, default=0))
    table = np.zeros(top + 1, dtype=np.uint32 if top > 65535 else np.uint16)
    kept = [value for value in values if 0 < value <= top]
    table[kept] = kept
    return table[np.clip(array, 0, top)]


MAX_REGIONS = 16  # bit codes in uint16


def region_codes(array: np.ndarray, regions: list[list[int]]) -> np.ndarray:
    """Bit i set where the voxel's value belongs to region i, so equal codes mean the same membership in every region."""
    array = np.asarray(array)
    if array.dtype.kind not in "ui":
        array = np.rint(array).astype(np.int64)
    top = max(int(array.max()) if array.size else 0, max((v for group in regions for v in group), default=0))
    table = np.zeros(top + 1, dtype=np.uint16)
    for bit, values in enumerate(regions):
        kept = [value for value in values if 0 < value <= top]
        table[kept] |= np.uint16(1 << bit)
    return table[np.clip(array, 0, top)]


def region_code_names(names: list[str]) -> dict[int, str]:
    """{bit code: name of its last region}: with nested regions listed outermost first, the innermost one."""
    return {code: names[code.bit_length() - 1] for code in range(1, 1 << len(names))}


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    found = ndimage.find_objects(mask.astype(np.uint8, copy=False))
    return found[0] if found else None


def largest_error(pred: np.ndarray, ref: np.ndarray, spacing) -> tuple[np.ndarray | None, tuple[slice, ...] | None, tuple[int, int, int]]:
    """(component mask inside its box, the box, centre voxel) of the largest 26-connected disagreement.

    The centre is the component's voxel farthest (in mm) from any voxel outside it. Without
    disagreement: no component, centre = reference (else prediction, else volume) centroid.
    """
    error = pred != ref
    box = _bounding_box(error)
    if box is None:
        foreground = ref > 0 if ref.any() else pred > 0
        centre = ndimage.center_of_mass(foreground) if foreground.any() else [(n - 1) / 2 for n in ref.shape]
        return None, None, tuple(int(round(c)) for c in centre)  # type: ignore[return-value]
    components, _ = ndimage.label(error[box], structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    component = components == int(np.argmax(sizes))
    inner = _bounding_box(component)
    depth = ndimage.distance_transform_edt(np.pad(component[inner], 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    deepest = np.argwhere(depth >= depth.max() - 1e-6)  # ties (e.g. a slab): the one nearest their middle
    chosen = deepest[np.argmin(((deepest - deepest.mean(axis=0)) ** 2).sum(axis=1))]
    centre = tuple(int(d + i.start + b.start) for d, i, b in zip(chosen, inner, box))
    return component, box, centre  # type: ignore[return-value]


def component_labels(component: np.ndarray, box, pred: np.ndarray, ref: np.ndarray, names: dict[int, str]) -> tuple[str, str]:
    """The (reference, predicted) label pair that makes up most of the component."""
    ref_values, pred_values = ref[box][component].astype(np.int64), pred[box][component].astype(np.int64)
    base = int(pred_values.max()) + 1
    codes, counts = np.unique(ref_values * base + pred_values, return_counts=True)
    ref_value, pred_value = divmod(int(codes[np.argmax(counts)]), base)
    return names.get(ref_value, "background"), names.get(pred_value, "background")


ZERO_BACKGROUND_FRACTION = 0.2


def _intensity_sample(image: Volume) -> np.ndarray:
    array = image.array if image.array.ndim == 3 else image.array[..., 0]
    step = max(1, round((array.size / 2_000_000) ** (1 / 3)))  # ~2M voxels are plenty for percentiles
    sample = np.asarray(array[::step, ::step, ::step], dtype=np.float32)
    return sample[np.isfinite(sample)]


def zero_background(image: Volume | None, config: ReportConfig) -> bool:
    """Whether exact zeros are a masked-out background (skull-stripped or brain-masked MR, as BraTS ships it):
    then the window comes from the other voxels and zeros are drawn black, not as mid-grey tissue."""
    if image is None or config.modality == "CT" or str(image.meta.get("modality", "")).upper() == "CT":
        return False
    sample = _intensity_sample(image)
    if not sample.size or float(np.percentile(sample, 0.5)) < config.hu_air_threshold:  # CT in HU
        return False
    return float(np.mean(sample == 0)) > ZERO_BACKGROUND_FRACTION and float(sample.min()) < 0 < float(sample.max())


def display_range(image: Volume | None, config: ReportConfig, background: bool | None = None) -> tuple[float, float, str]:
    """(low, high, description) of the grey-level window: a HU window for CT, percentiles otherwise.

    ``background``: :func:`zero_background` when the caller already knows it (one sample, not two).
    """
    if image is None:
        return 0.0, 1.0, "no image, reference structures in grey"
    sample = _intensity_sample(image)
    background = zero_background(image, config) if background is None else background
    if background:
        sample = sample[sample != 0]
    modality = config.modality
    if modality == "auto":
        declared = str(image.meta.get("modality", "")).upper()
        if declared in ("CT", "MR"):
            modality = declared
        elif sample.size and float(np.percentile(sample, 0.5)) < config.hu_air_threshold:
            modality = "CT"
        else:
            modality = "other"
    if modality == "CT":
        width, level = config.ct_window_width, config.ct_window_level
        return level - width / 2, level + width / 2, f"CT window W{width:g}/L{level:g} HU"
    low_pct, high_pct = config.mr_percentiles
    if not sample.size:
        return 0.0, 1.0, "empty image"
    low, high = (float(v) for v in np.percentile(sample, [low_pct, high_pct]))
    high = high if high > low else low + 1.0
    name = "MR" if modality == "MR" else "intensity"
    text = f"{name} window: percentiles {low_pct:g} to {high_pct:g} ({low:.4g} to {high:.4g})"
    return low, high, text + (" of the non-zero voxels; zero background in black" if background else "")


def _crop(pred: np.ndarray, ref: np.ndarray, spacing: np.ndarray, config: ReportConfig) -> tuple[slice, ...]:
    full = tuple(slice(0, n) for n in ref.shape)
    box = _bounding_box((pred > 0) | (ref > 0)) if config.crop_to_foreground else None
    if box is None:
        return full
    margin = np.ceil(config.crop_margin_mm / spacing).astype(int)
    return tuple(slice(max(s.start - m, 0), min(s.stop + m, n)) for s, m, n in zip(box, margin, ref.shape))


def _plane_index(plane: Plane, centre, crop: tuple[slice, ...]) -> tuple[slice, slice, slice]:
    index = list(crop)
    index[plane.fixed] = slice(centre[plane.fixed], centre[plane.fixed] + 1)
    return tuple(index)  # type: ignore[return-value]


def display_plane(block: np.ndarray, plane: Plane) -> np.ndarray:
    """A one-voxel-thick block of a RAS array -> the 2D display array (rows, columns)."""
    flat = np.squeeze(block, axis=plane.fixed)  # the two remaining axes keep their order
    by_cols_rows = flat if plane.cols < plane.rows else flat.T
    return by_cols_rows.T[::-1, ::-1]


def sample_image(image: Volume, label_affine: np.ndarray, index: tuple[slice, slice, slice]) -> np.ndarray:
    """Image values at the label voxels of ``index`` (exact where grids coincide, else trilinear)."""
    grids = np.meshgrid(*[np.arange(s.start, s.stop) for s in index], indexing="ij")
    voxels = np.stack([g.ravel() for g in grids] + [np.ones(grids[0].size)])
    image_voxels = (np.linalg.inv(image.affine) @ label_affine @ voxels)[:3]
    array = image.array if image.array.ndim == 3 else image.array[..., 0]
    if np.allclose(image_voxels, np.rint(image_voxels), atol=1e-3):
        limits = np.array(array.shape)[:, None]
        inside = np.all((image_voxels > -0.5) & (image_voxels < limits - 0.5), axis=0)
        ijk = np.clip(np.rint(image_voxels).astype(int), 0, limits - 1)
        values = np.where(inside, array[tuple(ijk)].astype(np.float32), np.nan)
    else:
        values = ndimage.map_coordinates(np.asarray(array, dtype=np.float32), image_voxels, order=1, mode="constant", cval=np.nan)
    return values.reshape(grids[0].shape)


def case_panels(pred: Volume, ref: Volume, image: Volume | None, names: dict[int, str], config: ReportConfig,
                regions: list[tuple[str, list[int]]] = ()):  # fmt: skip
    """The three panels of one case plus (centre world mm, error mL, error label pair, window text).

    ``regions`` (name, values) switches to region mode: the maps become region bit codes.
    """
    pred, ref = pred.reoriented("RAS"), ref.reoriented("RAS")
    region_names: tuple[str, ...] = ()
    if 0 < len(regions) <= MAX_REGIONS:
        region_names = tuple(name for name, _ in regions)
        groups = [values for _, values in regions]
        pred_array, ref_array = region_codes(pred.array, groups), region_codes(ref.array, groups)
        names = region_code_names(list(region_names))
    else:
        values = sorted(names)
        pred_array, ref_array = evaluated_only(pred.array, values), evaluated_only(ref.array, values)
    spacing = ref.spacing
    component, box, centre = largest_error(pred_array, ref_array, spacing)
    error_full = np.zeros(ref_array.shape, bool)
    error_ml, pair = 0.0, None
    if component is not None:
        error_full[box] = component
        error_ml = float(component.sum() * abs(np.linalg.det(ref.affine[:3, :3])) / 1000.0)
        pair = component_labels(component, box, pred_array, ref_array, names)
    background = zero_background(image, config)
    low, high, window = display_range(image, config, background)
    crop = _crop(pred_array, ref_array, spacing, config)
    world = (ref.affine @ np.array([*centre, 1.0]))[:3]
    panels = []
    for plane in PLANES:
        index = _plane_index(plane, centre, crop)
        ref2d, pred2d, error2d = (display_plane(array[index], plane) for array in (ref_array, pred_array, error_full))
        if image is not None:
            values = display_plane(sample_image(image, ref.affine, index), plane)
            grey = np.clip((np.nan_to_num(values, nan=low) - low) / (high - low), 0, 1)
            if background:
                grey[values == 0] = 0.0
        else:
            grey = np.where(ref2d > 0, 0.42, 0.06)
        row_mm, col_mm = float(spacing[plane.rows]), float(spacing[plane.cols])
        col = crop[plane.cols].stop - 1 - centre[plane.cols]
        row = crop[plane.rows].stop - 1 - centre[plane.rows]
        marker = ((col + 0.5) * col_mm, (row + 0.5) * row_mm)
        panels.append(Panel(plane, grey, ref2d, pred2d, error2d, row_mm, col_mm, marker, float(world[plane.fixed]), region_names, index, ref.affine))
    return panels, tuple(float(v) for v in world), error_ml, pair, window


def layout(sizes_mm: list[tuple[float, float]], height_px: int, width_px: int) -> tuple[list[tuple[float, float, float, float]], float, float]:
    """Pixel boxes (x, y from the top, width, height) of the axial, coronal and sagittal panels, and the canvas size.

    Either the three side by side, or the axial view beside coronal-over-sagittal, whichever
    allows the larger common scale (the compact stack on ties): flat coronal/sagittal views of
    a short scan then do not leave half the thumbnail empty.
    """
    gap, band = 12.0, 16.0  # between panels; title band above each panel
    (w0, h0), (w1, h1), (w2, h2) = sizes_mm
    row_scale = min(height_px / max(h0, h1, h2), (width_px - 4 * gap) / (w0 + w1 + w2))
    stack_scale = min(height_px / h0, (height_px - band - gap) / (h1 + h2), (width_px - 3 * gap) / (w0 + max(w1, w2)))
    boxes = []
    if stack_scale >= row_scale:
        s = stack_scale
        right = 2 * gap + w0 * s
        boxes = [(gap, band, w0 * s, h0 * s), (right, band, w1 * s, h1 * s), (right, band + h1 * s + gap + band, w2 * s, h2 * s)]
    else:
        s, x = row_scale, gap
        for width, height in sizes_mm:
            boxes.append((x, band, width * s, height * s))
            x += width * s + gap
    canvas_w = max(x + w for x, _, w, _ in boxes) + gap
    canvas_h = max(y + h for _, y, _, h in boxes)
    return boxes, canvas_w, canvas_h


def draw_panels(panels: list[Panel], config: ReportConfig) -> str:
    """One PNG (data URI) of the three panels at one physical scale, with a legend."""

    def draw(axis, panel: Panel, xs: np.ndarray, ys: np.ndarray, extent) -> None:
        if panel.regions:
            _draw_regions(axis, panel, xs, ys, extent, config)
        else:
            _draw_labels(axis, panel, xs, ys, extent, config)

    return png_data_uri(panel_figure(panels, config, _legend(panels[0].regions, config), draw), config.palette_colors)


PanelPainter = Callable[..., None]  # (axis, panel, xs, ys, extent): draws over the grey image


def panel_figure(panels: list[Panel], config: ReportConfig, handles: list, draw: PanelPainter, footer_px: float = 0.0) -> Figure:
    """The three panels at one physical scale over their grey images, ``draw`` painting each, a legend of
    ``handles`` below, and ``footer_px`` of free space under it (for a colour bar)."""
    boxes, canvas_w, canvas_h = layout([panel.size_mm for panel in panels], config.panel_height_px, config.max_width_px)
    columns = min(len(handles), 4)
    legend_h, dpi = 8.0 + 18.0 * -(-len(handles) // columns), 100
    fig_w, fig_h = max(canvas_w, 420.0), canvas_h + legend_h + footer_px
    fig = Figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi, facecolor="white")
    outline = [patheffects.withStroke(linewidth=2, foreground="black")]
    for panel, (x, y, width, height) in zip(panels, boxes):
        width, height = max(width, 8.0), max(height, 8.0)
        axis = fig.add_axes((x / fig_w, 1 - (y + height) / fig_h, width / fig_w, height / fig_h))
        extent_w, extent_h = panel.size_mm
        extent = (0, extent_w, extent_h, 0)
        axis.imshow(panel.grey, cmap="gray", vmin=0, vmax=1, extent=extent, interpolation="bilinear", aspect="auto")
        xs = (np.arange(panel.grey.shape[1]) + 0.5) * panel.col_mm
        ys = (np.arange(panel.grey.shape[0]) + 0.5) * panel.row_mm
        draw(axis, panel, xs, ys, extent)
        axis.plot(*panel.marker_mm, marker="+", markersize=10, markeredgewidth=1.3, color="white")
        axis.set_xlim(0, extent_w)
        axis.set_ylim(extent_h, 0)
        axis.set_axis_off()
        left, right, top, bottom = panel.plane.edges
        style = {"color": "white", "fontsize": 8, "fontweight": "bold", "path_effects": outline, "transform": axis.transAxes}
        axis.text(0.012, 0.5, left, ha="left", va="center", **style)
        axis.text(0.988, 0.5, right, ha="right", va="center", **style)
        axis.text(0.5, 0.985, top, ha="center", va="top", **style)
        axis.text(0.5, 0.015, bottom, ha="center", va="bottom", **style)
        coordinate = "xyz"[panel.plane.fixed]
        fig.text(x / fig_w, 1 - (y - 3) / fig_h, f"{panel.plane.name}, {coordinate} = {panel.position_mm:.1f} mm", fontsize=8, va="bottom", ha="left", color="#333333")
    fig.legend(handles=handles, loc="lower left", bbox_to_anchor=(4 / fig_w, footer_px / fig_h), ncol=columns, frameon=False, fontsize=8,
               handlelength=1.5, columnspacing=1.2)
    return fig


def region_color(index: int, config: ReportConfig) -> str:
    return config.region_colors[index % len(config.region_colors)]


def _legend(regions: tuple[str, ...], config: ReportConfig) -> list:
    centre = Line2D([], [], color="#444444", marker="+", linestyle="", markersize=8, label="slice centre")
    if regions:
        return [Patch(facecolor=region_color(i, config), alpha=0.8, label=name) for i, name in enumerate(regions)] + [
            Line2D([], [], color="#444444", linewidth=2, label="line: reference, fill: prediction"),
            Line2D([], [], color="#444444", linewidth=1.5, linestyle="--", label="largest disagreement"),
            centre,
        ]  # fmt: skip
    return [
        Line2D([], [], color=config.reference_color, linewidth=2, label="reference"),
        Line2D([], [], color=config.prediction_color, linewidth=2, label="prediction"),
        Patch(facecolor=config.error_color, alpha=0.5, label="largest disagreement"),
        centre,
    ]


def _draw_labels(axis, panel: Panel, xs: np.ndarray, ys: np.ndarray, extent, config: ReportConfig) -> None:
    """Label mode: the largest disagreement shaded, reference and prediction contours of every label."""
    if panel.error.any():
        overlay = np.zeros((*panel.grey.shape, 4), np.float32)
        overlay[panel.error] = [*to_rgb(config.error_color), 0.5]
        axis.imshow(overlay, extent=extent, interpolation="nearest", aspect="auto")
    for labels, color in ((panel.ref, config.reference_color), (panel.pred, config.prediction_color)):
        for value in np.unique(labels):
            if value != 0:
                draw_contour(axis, labels == value, xs, ys, color, config.contour_width)


def _draw_regions(axis, panel: Panel, xs: np.ndarray, ys: np.ndarray, extent, config: ReportConfig) -> None:
    """Region mode: predicted regions filled (later regions over earlier ones, as regions_class_order paints),
    reference regions outlined in the same colours, the largest disagreement dashed."""
    fill = np.zeros((*panel.grey.shape, 4), np.float32)
    for bit in range(len(panel.regions)):
        fill[(panel.pred >> bit) & 1 > 0] = [*to_rgb(region_color(bit, config)), config.region_fill_alpha]
    axis.imshow(fill, extent=extent, interpolation="nearest", aspect="auto")
    for bit in range(len(panel.regions)):
        draw_contour(axis, (panel.ref >> bit) & 1 > 0, xs, ys, region_color(bit, config), 1.4 * config.contour_width)
    draw_contour(axis, panel.error, xs, ys, "white", config.contour_width, linestyle="--")


def draw_contour(axis, mask: np.ndarray, xs: np.ndarray, ys: np.ndarray, color: str, width: float, linestyle: str = "solid") -> None:
    if mask.shape[0] < 2 or mask.shape[1] < 2 or not mask.any():
        return
    axis.contour(xs, ys, mask.astype(np.float32), levels=[0.5], colors=[color], linewidths=width, linestyles=linestyle)


def image_overlaps(image: Volume, ref: Volume) -> bool:
    """Whether the label grid's centre falls inside the image (a guard against mismatched files)."""
    centre = ref.affine @ np.array([*((np.array(ref.shape) - 1) / 2), 1.0])
    voxel = np.linalg.solve(image.affine, centre)[:3]
    return bool(np.all(voxel >= -0.5) and np.all(voxel <= np.array(image.shape) - 0.5))


def case_thumbnail(
    case: str,
    anchor: str,
    pred_path: Path,
    ref_path: Path,
    image_path: Path | None,
    names: dict[int, str],
    config: ReportConfig,
    regions: list[tuple[str, list[int]]] = (),  # type: ignore[assignment]
    entropy_path: Path | None = None,
) -> Thumbnail:
    """Read one case's maps (and image) and render its thumbnail; notes say what could not be shown.

    ``entropy_path``: a `medseg infer --save-uncertainty` entropy map on the prediction's grid; the
    thumbnail then also holds the same three views coloured by it (:mod:`medseg.report.uncertainty`)."""
    pred, ref = read_volume(pred_path, role="label"), read_volume(ref_path, role="label")
    image = read_volume(image_path, role="image", allow_channels=True) if image_path is not None else None
    notes = []
    if image is not None and not image_overlaps(image, ref):
        notes.append("the image does not cover the label maps in world coordinates (wrong file?): masks shown without it")
        image = None
    if image is not None and image.array.ndim == 4:
        notes.append(f"the image has {image.channels} channels: the first is shown")
    panels, centre, error_ml, pair, window = case_panels(pred, ref, image, names, config, regions)
    thumbnail = Thumbnail(case, anchor, draw_panels(panels, config), centre, error_ml, pair, window, notes)  # type: ignore[arg-type]
    if entropy_path is not None:
        from medseg.report.uncertainty import uncertainty_figure  # it draws with this module's panels

        figure = uncertainty_figure(panels, entropy_path, pred, config, ref)
        thumbnail.uncertainty_uri, thumbnail.uncertainty_caption = figure.uri, figure.caption
        if figure.note:
            notes.append(figure.note)
    return thumbnail


def anchor_for(case: str, taken: set[str]) -> str:
    """An HTML id for a case (letters, digits, - and _ only), unique among ``taken``."""
    base = "case-" + "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in case)
    anchor, counter = base, 2
    while anchor in taken:
        anchor, counter = f"{base}-{counter}", counter + 1
    taken.add(anchor)
    return anchor

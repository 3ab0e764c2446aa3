"""Overlay geometry: radiological orientation whatever the storage order, physical aspect, where the slices go."""

import numpy as np
import pytest

from medseg.io.volume import Volume
from medseg.report.config import ReportConfig
from medseg.report.overlays import case_panels, display_range, largest_error, layout, sample_image

SHAPE = (20, 18, 16)
SPACING = (1.0, 2.0, 3.0)
RAS = np.diag([*SPACING, 1.0])
NAMES = {1: "organ", 2: "marker"}
FLAT = ReportConfig(crop_to_foreground=False)


def _stored(array: np.ndarray, affine: np.ndarray, flips=(), order=(0, 1, 2)) -> Volume:
    """The same voxels stored with flipped and/or permuted axes (affine adjusted: same world points)."""
    affine = affine.copy()
    for axis in flips:
        n = array.shape[axis]
        array = np.flip(array, axis)
        flip = np.eye(4)
        flip[axis, axis], flip[axis, 3] = -1, n - 1
        affine = affine @ flip
    permute = np.eye(4)[:, list(order) + [3]]
    return Volume(np.ascontiguousarray(np.transpose(array, order)), affine @ permute, "label")


def _phantom():
    reference = np.zeros(SHAPE, np.uint8)
    reference[4:16, 3:15, 3:13] = 1
    reference[15:18, 13:16, 12:15] = 2  # towards the patient's right (+x), anterior (+y), superior (+z)
    prediction = reference.copy()
    prediction[reference == 2] = 0  # the marker is missed: the largest error
    return reference, prediction


def _panels(reference, prediction, **storage):
    ref, pred = _stored(reference, RAS, **storage), _stored(prediction, RAS, **storage)
    return case_panels(pred, ref, None, NAMES, FLAT)


def test_radiological_orientation_and_aspect():
    reference, prediction = _phantom()
    panels, centre, error_ml, pair, _ = _panels(reference, prediction)
    assert pair == ("marker", "background") and error_ml == pytest.approx(27 * 6.0 / 1000)
    assert centre == pytest.approx((16.0, 28.0, 39.0))  # the marker's central voxel (16, 14, 13) in mm
    axial, coronal, sagittal = panels
    for panel in panels:
        rows, cols = np.nonzero(panel.ref == 2)
        height, width = panel.ref.shape
        assert rows.mean() < height / 2, panel.plane.name  # anterior (axial) / superior on top
        assert cols.mean() < width / 2, panel.plane.name  # patient's right (axial, coronal) / anterior (sagittal) on the left
    assert axial.ref.shape == (18, 20) and (axial.row_mm, axial.col_mm) == (2.0, 1.0)
    assert coronal.ref.shape == (16, 20) and (coronal.row_mm, coronal.col_mm) == (3.0, 1.0)
    assert sagittal.ref.shape == (16, 18) and (sagittal.row_mm, sagittal.col_mm) == (3.0, 2.0)
    assert axial.size_mm == (20.0, 36.0)
    # the slice-centre marker sits on the missed marker in every view
    for panel in panels:
        x, y = panel.marker_mm
        assert panel.ref[int(y // panel.row_mm), int(x // panel.col_mm)] == 2


@pytest.mark.parametrize("storage", [{"flips": (0, 1)}, {"order": (2, 0, 1)}, {"flips": (2,), "order": (1, 2, 0)}])
def test_storage_order_does_not_change_the_views(storage):
    reference, prediction = _phantom()
    expected, *_ = _panels(reference, prediction)
    panels, centre, *_ = _panels(reference, prediction, **storage)
    assert centre == pytest.approx((16.0, 28.0, 39.0))
    for got, want in zip(panels, expected):
        np.testing.assert_array_equal(got.ref, want.ref)
        np.testing.assert_array_equal(got.pred, want.pred)
        assert (got.row_mm, got.col_mm) == (want.row_mm, want.col_mm)


def test_image_on_another_grid_is_sampled_in_world_coordinates():
    # an image twice as fine in x, stored LPS, whose value is the world x coordinate
    fine = np.diag([0.5, 2.0, 3.0, 1.0])
    shape = (40, 18, 16)
    world_x = (np.arange(shape[0]) * 0.5)[:, None, None] * np.ones(shape)
    image = _stored(world_x.astype(np.float32), fine, flips=(0, 1))
    index = (slice(2, 12), slice(5, 6), slice(0, 16))
    sampled = sample_image(image, RAS, index)
    np.testing.assert_allclose(sampled[:, 0, 0], np.arange(2, 12) * 1.0, atol=1e-5)
    # same grid: exact lookup, and points outside the image are NaN
    same = Volume(world_x[::2].astype(np.float32), RAS)
    values = sample_image(same, RAS @ np.array([[1, 0, 0, 15], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), (slice(0, 10), slice(0, 1), slice(0, 1)))
    assert values[:5, 0, 0].tolist() == [15.0, 16.0, 17.0, 18.0, 19.0] and np.isnan(values[5:, 0, 0]).all()


def test_display_range_ct_window_and_percentiles():
    rng = np.random.default_rng(0)
    ct = Volume(np.where(rng.random((20, 20, 20)) < 0.3, -1000.0, rng.normal(40, 30, (20, 20, 20))), RAS)
    assert display_range(ct, ReportConfig())[:2] == (-160.0, 240.0)
    mr = Volume(rng.uniform(0, 1000, (20, 20, 20)), RAS, meta={"modality": "MR"})
    low, high, text = display_range(mr, ReportConfig())
    assert low == pytest.approx(np.percentile(mr.array, 1)) and high == pytest.approx(np.percentile(mr.array, 99)) and text.startswith("MR")
    declared_ct = Volume(rng.uniform(0, 100, (8, 8, 8)), RAS, meta={"modality": "CT"})
    assert "W400/L40" in display_range(declared_ct, ReportConfig())[2]
    assert display_range(ct, ReportConfig(modality="MR"))[2].startswith("MR")


def test_largest_error_centre_is_its_thickest_point():
    ref = np.zeros((30, 30, 30), np.uint8)
    pred = ref.copy()
    pred[2:9, 2:9, 2:9] = 1  # a 7^3 false positive...
    pred[8, 8:29, 8] = 1  # ...with a long thin tail pulling its centroid away
    pred[20:23, 2:5, 20:23] = 1  # a smaller separate error
    component, box, centre = largest_error(pred, ref, (1.0, 1.0, 1.0))
    assert centre == (5, 5, 5)
    assert component.sum() == 7**3 + 20
    ref[10:13, 4:7, 20:23] = 1  # perfect agreement: slices through the reference centroid
    none, _, centre = largest_error(ref, ref, (1.0, 1.0, 1.0))
    assert none is None and centre == (11, 5, 21)


def test_layout_stacks_flat_views_and_keeps_one_scale():
    # a short scan: coronal and sagittal are flat, so they stack beside the axial view
    boxes, width, height = layout([(300, 250), (300, 60), (250, 60)], 300, 1200)
    (x0, _, w0, h0), (x1, y1, w1, h1), (x2, y2, w2, h2) = boxes
    assert x1 == x2 > x0 + w0 and y2 > y1 + h1 and height <= 300 + 16
    assert w0 / 300 == pytest.approx(w1 / 300) == pytest.approx(h1 / 60)  # one px-per-mm scale
    # a tall coronal view: side by side
    boxes, _, _ = layout([(300, 250), (300, 500), (250, 500)], 300, 1200)
    assert boxes[0][1] == boxes[1][1] == boxes[2][1] and boxes[1][0] > boxes[0][0]
    assert boxes[1][3] == pytest.approx(300)

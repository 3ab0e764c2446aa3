"""Cases whose metrics can be worked out by hand, and the documented empty-mask conventions."""

import numpy as np
import pytest
from scipy import ndimage

from medseg.io.volume import Volume
from medseg.metrics.case import evaluate_case
from medseg.metrics.config import EvaluateConfig
from medseg.metrics.labels import LabelSpec
from medseg.metrics.surface import image_diagonal_mm, surface_voxels
from tests.metrics.helpers import sphere

SPACING = (0.7, 1.3, 2.1)
SPECS = [LabelSpec("thing", (1,))]


def _volume(mask: np.ndarray, spacing=SPACING) -> Volume:
    return Volume(mask.astype(np.uint8), np.diag([*spacing, 1.0]), "label")


def _evaluate(pred, ref, spacing=SPACING, **config) -> dict:
    rows, _ = evaluate_case(_volume(pred, spacing), _volume(ref, spacing), SPECS, EvaluateConfig(**config))
    return rows[0]


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3])
def test_cubes_offset_by_k_voxels(axis, k):
    n = 10
    ref = np.zeros((20, 20, 20), bool)
    ref[4 : 4 + n, 4 : 4 + n, 4 : 4 + n] = True
    pred = np.roll(ref, k, axis=axis)
    row = _evaluate(pred, ref)
    assert row["dice"] == pytest.approx((n - k) / n)
    assert row["iou"] == pytest.approx((n - k) / (n + k))
    assert (row["tp"], row["fp"], row["fn"]) == (n * n * (n - k), n * n * k, n * n * k)
    # The far faces are k voxels apart and make up >5% of the surface, so HD95 = HD = k * spacing.
    assert row["hd"] == pytest.approx(k * SPACING[axis])
    assert row["hd95"] == pytest.approx(k * SPACING[axis])
    voxel_ml = np.prod(SPACING) / 1000
    assert row["volume_ref_ml"] == pytest.approx(n**3 * voxel_ml)
    assert row["abs_volume_error_ml"] == pytest.approx(0.0, abs=1e-12)
    assert row["empty"] == ""


def test_sphere_against_dilated_sphere():
    ref = sphere((30, 30, 30), (15, 15, 15), 9)
    pred = ndimage.binary_dilation(ref)  # one 6-connected step outwards
    s = 1.5
    row = _evaluate(pred, ref, spacing=(s, s, s), tolerance_mm=s)
    # Every surface voxel of either mask is exactly one voxel step from the other surface.
    assert row["hd"] == pytest.approx(s)
    assert row["hd95"] == pytest.approx(s)
    assert row["assd"] == pytest.approx(s)
    assert row["nsd"] == pytest.approx(1.0)
    assert row["dice"] == pytest.approx(2 * ref.sum() / (ref.sum() + pred.sum()))
    assert _evaluate(pred, ref, spacing=(s, s, s), tolerance_mm=s * 0.99)["nsd"] == 0.0


def test_identical_masks_are_perfect():
    ref = sphere((20, 22, 24), (10, 11, 12), 6)
    row = _evaluate(ref, ref)
    assert (row["dice"], row["iou"], row["hd"], row["hd95"], row["assd"], row["nsd"]) == (1.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def test_both_empty_convention():
    empty = np.zeros((8, 9, 10), bool)
    row = _evaluate(empty, empty)
    assert row["empty"] == "both"
    assert row["dice"] == 1.0 and row["iou"] == 1.0
    assert all(np.isnan(row[name]) for name in ("hd", "hd95", "assd", "nsd", "rel_volume_error"))


@pytest.mark.parametrize("missing", ["pred", "ref"])
def test_one_empty_convention(missing):
    shape = (8, 9, 10)
    mask = np.zeros(shape, bool)
    mask[2:5, 2:5, 2:5] = True
    empty = np.zeros(shape, bool)
    pred, ref = (empty, mask) if missing == "pred" else (mask, empty)
    row = _evaluate(pred, ref)
    assert row["empty"] == missing
    assert row["dice"] == 0.0 and row["nsd"] == 0.0
    diagonal = image_diagonal_mm(shape, SPACING)
    assert diagonal == pytest.approx(np.linalg.norm(np.array(shape) * SPACING))
    assert row["hd"] == row["hd95"] == row["assd"] == pytest.approx(diagonal)
    assert _evaluate(pred, ref, empty_distance="fixed", empty_distance_mm=50.0)["hd95"] == 50.0
    assert np.isnan(_evaluate(pred, ref, empty_distance="nan")["hd95"])
    assert np.isnan(row["rel_volume_error"]) == (missing == "ref")


def test_surface_voxels_match_scipy_erosion_including_border():
    rng = np.random.default_rng(3)
    mask = rng.random((7, 8, 9)) < 0.7
    expected = mask & ~ndimage.binary_erosion(mask)  # border_value=0: outside counts as background
    np.testing.assert_array_equal(surface_voxels(mask), expected)
    assert surface_voxels(mask)[0][mask[0]].all()  # voxels on the array border are always surface


def test_region_label_is_the_union_of_its_values():
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[1:4, 1:4, 1:4] = 1
    ref[5:8, 5:8, 5:8] = 2
    pred = ref.copy()
    pred[5:8, 5:8, 5:8] = 1  # right region, wrong sub-label
    rows, _ = evaluate_case(_volume(pred), _volume(ref), [LabelSpec("whole", (1, 2)), LabelSpec("two", (2,))])
    by_name = {row["label"]: row for row in rows}
    assert by_name["whole"]["dice"] == 1.0 and by_name["whole"]["label_index"] == "1+2"
    assert by_name["two"]["dice"] == 0.0 and by_name["two"]["empty"] == "pred"


def test_orientation_does_not_change_metrics():
    rng = np.random.default_rng(5)
    ref = ndimage.binary_dilation(rng.random((12, 14, 16)) < 0.02, iterations=2)
    pred = ndimage.binary_dilation(ref) & (rng.random(ref.shape) < 0.97)
    ras = evaluate_case(_volume(pred), _volume(ref), SPECS)[0][0]
    flipped_affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])  # LPS storage of the same grid
    lps = [Volume(np.ascontiguousarray(m[::-1, ::-1]).astype(np.uint8), flipped_affine, "label") for m in (pred, ref)]
    other = evaluate_case(lps[0], lps[1], SPECS)[0][0]
    for name in ("dice", "hd", "hd95", "assd", "nsd", "volume_ref_ml"):
        assert other[name] == pytest.approx(ras[name])


def test_memory_layout_and_bool_masks_do_not_change_results():
    rng = np.random.default_rng(8)
    ref = ndimage.binary_dilation(rng.random((14, 12, 10)) < 0.03, iterations=2)
    pred = ndimage.binary_dilation(ref) & (rng.random(ref.shape) < 0.95)
    expected = _evaluate(pred, ref)
    affine = np.diag([*SPACING, 1.0])
    fortran = [Volume(np.asfortranarray(m.astype(np.uint8)), affine, "label") for m in (pred, ref)]
    mixed = [fortran[0], Volume(ref, affine, "label")]  # Fortran prediction, C-ordered boolean reference
    for volumes in (fortran, mixed):
        row = evaluate_case(*volumes, SPECS)[0][0]
        for name in ("dice", "hd", "hd95", "assd", "nsd", "tp", "fp"):
            assert row[name] == pytest.approx(expected[name]), name

import numpy as np
import pytest

from medseg.io import geometry
from medseg.io.volume import Volume, label_dtype
from tests.io.helpers import oblique_affine


def test_lps_ras_round_trip_is_exact_and_flips_only_x_y():
    spacing, origin, direction = np.array([0.5, 0.8, 2.5]), np.array([10.0, -20.0, 30.0]), np.eye(3)
    affine = geometry.affine_from_lps(spacing, origin, direction)
    # A DICOM/ITK identity direction (LPS) is "LPS" in RAS terms: x, y negated, z kept.
    assert geometry.orientation_code(affine) == "LPS"
    np.testing.assert_allclose(affine[:3, 3], [-10.0, 20.0, 30.0])
    back_spacing, back_origin, back_direction = geometry.lps_from_affine(affine)
    np.testing.assert_allclose(back_spacing, spacing)
    np.testing.assert_allclose(back_origin, origin)
    np.testing.assert_allclose(back_direction, direction)


def test_lps_round_trip_on_oblique_affine():
    affine = oblique_affine()
    spacing, origin, direction = geometry.lps_from_affine(affine)
    np.testing.assert_allclose(geometry.affine_from_lps(spacing, origin, direction), affine, atol=1e-12)
    np.testing.assert_allclose(spacing, [0.7, 0.9, 3.3])


def test_world_voxel_inverse():
    affine = oblique_affine()
    ijk = np.array([[0, 0, 0], [3.5, 2, 1], [10, 11, 12]])
    np.testing.assert_allclose(geometry.world_to_voxel(affine, geometry.voxel_to_world(affine, ijk)), ijk, atol=1e-9)


def test_shear_is_detected():
    affine = np.eye(4)
    affine[0, 2] = 0.3  # slices shifted along x as z grows: gantry tilt
    assert not geometry.is_orthogonal(affine)
    assert geometry.is_orthogonal(oblique_affine())


@pytest.mark.parametrize("target", ["RAS", "LPS", "PSR", "ILA"])
def test_reorientation_keeps_world_positions(target, rng):
    array = rng.normal(size=(5, 6, 7)).astype(np.float32)
    volume = Volume(array, oblique_affine(permutation=(2, 0, 1), flips=(-1, 1, -1)))
    moved = volume.reoriented(target)
    assert moved.orientation == target
    # Every voxel keeps its value at the same world point.
    ijk = np.argwhere(np.ones(volume.shape, bool))
    world = geometry.voxel_to_world(volume.affine, ijk)
    new_ijk = np.rint(geometry.world_to_voxel(moved.affine, world)).astype(int)
    np.testing.assert_array_equal(moved.array[tuple(new_ijk.T)], array[tuple(ijk.T)])


def test_label_dtype():
    assert label_dtype(2) == np.uint8
    assert label_dtype(300) == np.uint16
    with pytest.raises(ValueError):
        label_dtype(-1)

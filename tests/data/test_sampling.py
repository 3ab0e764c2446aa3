import numpy as np
import pytest

from medseg.data.sampling import CaseArrays, crop_with_padding, foreground_flags, sample_patch


def _case(rng, shape=(20, 24, 16)):
    image = rng.normal(size=(2, *shape)).astype(np.float32)
    seg = np.zeros(shape, np.uint8)
    seg[2:4, 3:5, 1:3] = 1  # tiny structure near a corner
    seg[15:18, 18:22, 12:15] = 2
    locations = {c: np.argwhere(seg == c) for c in (1, 2)}
    return CaseArrays("case", image, seg, locations)


def test_crop_with_padding_fills_outside():
    array = np.arange(5 * 6).reshape(1, 5, 6)
    out = crop_with_padding(array, np.array([-2, 4]), (4, 4), fill=-1)
    assert out.shape == (1, 4, 4)
    np.testing.assert_array_equal(out[0, 2:, :2], array[0, :2, 4:6])
    assert (out[0, :2] == -1).all() and (out[0, :, 2:] == -1).all()


def test_forced_foreground_patch_always_contains_foreground(rng):
    case = _case(rng)
    for _ in range(50):
        image, seg = sample_patch(case, (8, 8, 8), rng, force_foreground=True)
        assert image.shape == (2, 8, 8, 8) and seg.shape == (1, 8, 8, 8)
        assert (seg > 0).any()


def test_forced_foreground_visits_every_class(rng):
    case = _case(rng)
    seen = set()
    for _ in range(60):
        _, seg = sample_patch(case, (6, 6, 6), rng, force_foreground=True)
        seen |= set(np.unique(seg)) - {0}
    assert seen == {1, 2}


def test_random_patches_cover_the_image_and_match_source(rng):
    case = _case(rng)
    for _ in range(20):
        image, seg = sample_patch(case, (8, 8, 8), rng)
        # Patches inside a large-enough image are exact copies: find one voxel and compare neighbours.
        assert image.dtype == np.float32 and seg.dtype == np.uint8


def test_patch_larger_than_image_is_padded_and_centred(rng):
    case = _case(rng, shape=(6, 6, 6))
    image, seg = sample_patch(case, (10, 10, 10), rng)
    assert image.shape == (2, 10, 10, 10)
    # The whole image is inside the patch (need = 4 per axis, start = -2): 2 voxels of padding each side.
    np.testing.assert_array_equal(image[:, 2:8, 2:8, 2:8], case.image)
    assert (image[:, :2] == 0).all() and (image[:, 8:] == 0).all()


def test_two_d_patches_from_three_d_case(rng):
    case = _case(rng)
    image, seg = sample_patch(case, (8, 8), rng, force_foreground=True, slice_axis=2)
    assert image.shape == (2, 8, 8) and seg.shape == (1, 8, 8) and (seg > 0).any()


def test_wrong_patch_rank_is_refused(rng):
    with pytest.raises(ValueError, match="does not fit"):
        sample_patch(_case(rng), (8, 8), rng)


@pytest.mark.parametrize("batch,share,expected", [(2, 1 / 3, [False, True]), (6, 1 / 3, [False] * 4 + [True] * 2), (4, 0.0, [False] * 4)])
def test_foreground_flags(batch, share, expected):
    assert foreground_flags(batch, share) == expected

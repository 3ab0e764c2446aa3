import numpy as np
import pytest

from medseg.data.sampling import CaseArrays, crop_with_padding, foreground_flags, sample_patch, start_bounds


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


def _final_window(crop: np.ndarray, final: tuple[int, ...]) -> np.ndarray:
    """The window augmentation keeps when it does not rotate or scale: the centre of the sampled crop (MONAI's centre crop)."""
    starts = [(size - want) // 2 for size, want in zip(crop.shape[1:], final)]
    return crop[(slice(None), *(slice(s, s + w) for s, w in zip(starts, final)))]


def _coordinate_case(shape):
    """A case whose one channel holds each voxel's flat index + 1 (0 is padding), so a patch tells where it came from."""
    image = (np.arange(np.prod(shape)) + 1).reshape(1, *shape).astype(np.float32)
    seg = np.zeros(shape, np.uint8)
    return CaseArrays("coords", image, seg, {})


def test_final_window_moves_and_covers_every_voxel_of_a_case_smaller_than_the_crop():
    """Hippocampus-like: z (44) lies between the final patch (40) and the crop (64). The window must move and reach both z-edges.

    With bounds computed on the crop alone the window start was one fixed value and z 0, 1, 42, 43 were never seen.
    """
    rng = np.random.default_rng(0)
    shape, final, crop = (30, 44, 44), (32, 40, 40), (58, 68, 68)  # crop: nnU-Net's initial patch for (32, 40, 40)
    case = _coordinate_case(shape)
    seen = np.zeros(int(np.prod(shape)) + 1, bool)
    z_starts = set()
    for _ in range(300):
        image, _ = sample_patch(case, crop, rng, final_size=final)
        window = _final_window(image, final)[0].astype(int)
        seen[window.ravel()] = True
        inside = window[window > 0]
        z_starts.add(int(((inside - 1) % shape[2]).min()))
    assert len(z_starts) >= 3, f"the final window's z start took only {sorted(z_starts)}"
    assert seen[1:].all(), f"{(~seen[1:]).sum()} voxels never inside the final window"


def test_start_bounds_are_nnunets():
    # Case larger than the final patch: the final window starts anywhere in [0, shape - final] (odd overhang: one more at the low side).
    lower, upper = start_bounds((50,), (73,), (40,))
    assert (lower[0] + (73 - 40) // 2, upper[0] + (73 - 40) // 2) == (-1, 10)
    # Case smaller than the final patch: centred, whatever the crop (an odd remainder allows one voxel of play).
    lower, upper = start_bounds((30,), (73,), (40,))
    assert (lower[0] + 16, upper[0] + 16) == (-6, -5)
    # No margin: the old rule.
    assert [int(v[0]) for v in start_bounds((50,), (40,))] == [0, 10]


@pytest.mark.parametrize("corner", [0, 29])
def test_forced_foreground_voxel_stays_in_the_final_window_at_both_edges(corner):
    """nnU-Net centres the crop on the voxel and limits it at the low side only; clamping both sides (the old rule) then
    centre-cropping pushed a voxel at an edge out of the final window."""
    rng = np.random.default_rng(1)
    shape, final, crop = (30, 30, 30), (16, 16, 16), (20, 20, 20)
    seg = np.zeros(shape, np.uint8)
    seg[corner, corner, corner] = 1
    case = CaseArrays("edge", np.zeros((1, *shape), np.float32), seg, {1: np.argwhere(seg == 1)})
    _, patch = sample_patch(case, crop, rng, force_foreground=True, final_size=final)
    window = _final_window(patch, final)[0]
    assert window.sum() == 1
    where = tuple(int(i) for i in np.argwhere(window)[0])
    assert where == ((0, 0, 0) if corner == 0 else (8, 8, 8))  # low edge: window starts at 0; high edge: centred, overhanging

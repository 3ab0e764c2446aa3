"""Random training patches from preprocessed cases, with foreground oversampling.

Pure numpy on (possibly memory-mapped) arrays, so it runs the same inside DataLoader workers and
in tests. Patches that reach past an image border are zero-padded (image) and background-padded
(label), which is what a network sees at inference time with a padded sliding window.

Placement follows nnU-Net v2's loader (``nnUNetDataLoader.get_bbox``): when augmentation crops a
larger patch first (rotation and scaling resample it and keep its centre), the start bounds of that
crop are widened by (crop - final patch) so that the *final* window, not the crop, moves over the
whole case and reaches every border. Computed on the crop alone, the final window never saw the
outer (crop - final) / 2 voxels of a case, and on a case between the two sizes it never moved at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class CaseArrays:
    """One preprocessed case: ``image`` (C, *spatial), ``seg`` (*spatial), foreground voxel samples per class."""

    case_id: str
    image: np.ndarray
    seg: np.ndarray
    class_locations: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])


def start_bounds(shape: tuple[int, ...], crop: tuple[int, ...], final: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest start of a ``crop`` whose centred ``final`` window ranges over the case (nnU-Net's rule).

    The crop may overhang by (crop - final) / 2 per side, so the final window starts anywhere in
    ``[0, shape - final]``; a case smaller than the final window is centred (the window covers it all).
    """
    shape_a, crop_a = np.asarray(shape), np.asarray(crop)
    need = crop_a - np.asarray(final if final is not None else crop)
    need = np.where(shape_a + need < crop_a, crop_a - shape_a, need)
    lower = -need // 2  # floor: the extra voxel of an odd overhang goes to the low side too, as nnU-Net
    upper = shape_a + need // 2 + need % 2 - crop_a
    return lower, upper


def crop_with_padding(array: np.ndarray, start: np.ndarray, size: tuple[int, ...], fill: float = 0) -> np.ndarray:
    """``array[..., start:start+size]`` over the trailing spatial axes, padding with ``fill`` outside."""
    spatial = len(size)
    lead = array.shape[: array.ndim - spatial]
    out = np.full(lead + tuple(size), fill, dtype=array.dtype)
    src, dst = [], []
    for axis, (begin, length) in enumerate(zip(start, size)):
        extent = array.shape[array.ndim - spatial + axis]
        lo, hi = max(begin, 0), min(begin + length, extent)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - begin, hi - begin))
    out[(Ellipsis, *dst)] = array[(Ellipsis, *src)]
    return out


def choose_foreground_voxel(case: CaseArrays, rng: np.random.Generator, classes: list[int] | None = None,
                            regions: list[tuple[int, ...]] | None = None) -> np.ndarray | None:
    """A random voxel of a random foreground class present in the case (None if it has none).

    With ``regions`` (region-based training, as nnU-Net) a random region present in the case is
    chosen first, then a voxel of any of its classes, so a small nested region (enhancing tumour)
    is centred as often as the large one around it (whole tumour).
    """
    present = [c for c, locations in case.class_locations.items() if len(locations) and (classes is None or c in classes)]
    if not present:
        return None
    if regions:
        present_regions = [[c for c in region if c in present] for region in regions]
        present_regions = [members for members in present_regions if members]
        members = present_regions[rng.integers(len(present_regions))]
        counts = np.cumsum([len(case.class_locations[c]) for c in members])
        pick = int(rng.integers(counts[-1]))  # uniform over the region's pooled locations
        member = int(np.searchsorted(counts, pick, side="right"))
        offset = pick - (int(counts[member - 1]) if member else 0)
        return np.asarray(case.class_locations[members[member]][offset], dtype=int)
    chosen_class = present[rng.integers(len(present))]
    locations = case.class_locations[chosen_class]
    return np.asarray(locations[rng.integers(len(locations))], dtype=int)


def sample_patch(
    case: CaseArrays,
    patch_size: tuple[int, ...],
    rng: np.random.Generator,
    force_foreground: bool = False,
    slice_axis: int | None = None,
    regions: list[tuple[int, ...]] | None = None,
    final_size: tuple[int, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(image (C, *patch), seg (1, *patch))``.

    ``final_size`` is the window the network gets, centred in ``patch_size`` after augmentation
    (None: the same); placement then follows :func:`start_bounds`. A forced-foreground patch is
    centred on a foreground voxel, limited only at the low side, as nnU-Net does (near the high
    border the window may reach up to half a patch into the padding).
    ``slice_axis`` samples a 2D patch from a 3D case: one slice along that axis is chosen (through
    the foreground voxel when forced) and ``patch_size`` covers the two remaining axes.
    """
    image, seg = case.image, case.seg
    voxel = choose_foreground_voxel(case, rng, regions=regions) if force_foreground else None
    if slice_axis is not None:
        index = int(voxel[slice_axis]) if voxel is not None else int(rng.integers(case.spatial_shape[slice_axis]))
        image = np.take(image, index, axis=slice_axis + 1)
        seg = np.take(seg, index, axis=slice_axis)
        if voxel is not None:
            voxel = np.delete(voxel, slice_axis)
    shape = tuple(seg.shape)
    if len(shape) != len(patch_size) or (final_size is not None and len(final_size) != len(patch_size)):
        raise ValueError(f"patch size {patch_size} does not fit {len(shape)}D data of case {case.case_id}")
    lower, upper = start_bounds(shape, patch_size, final_size)
    if voxel is not None:
        start = np.maximum(voxel - np.asarray(patch_size) // 2, lower)
    else:
        start = np.array([rng.integers(lo, hi + 1) for lo, hi in zip(lower, upper)])
    image_patch = crop_with_padding(np.asarray(image), start, patch_size, 0).astype(np.float32, copy=False)
    seg_patch = crop_with_padding(np.asarray(seg), start, patch_size, 0)[None]
    return image_patch, seg_patch


def foreground_flags(batch_size: int, share: float) -> list[bool]:
    """Which samples of a batch are forced to contain foreground: the last ``round(batch*share)``, at least one if share > 0."""
    forced = int(round(batch_size * share))
    if share > 0:
        forced = max(forced, 1)
    return [index >= batch_size - forced for index in range(batch_size)]

"""Per-label cleanup rules and the per-label numbers of the sidecar, on crafted arrays."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import ConfigError
from medseg.infer.config import InferConfig, PostprocessRule
from medseg.infer.postprocess import label_statistics, lesion_label_indices, postprocess, postprocess_regions, resolve_region_rules, resolve_rules

NAMES = {0: "background", 1: "liver", 2: "tumor"}


def _crafted() -> np.ndarray:
    labels = np.zeros((20, 20, 10), dtype=np.uint8)
    labels[2:10, 2:10, 2:8] = 1  # liver, 384 voxels
    labels[15:17, 15:17, 1:3] = 1  # stray liver island, 8 voxels
    labels[4:6, 4:6, 4:6] = 2  # tumor inside the liver, 8 voxels
    labels[12, 2, 2] = 2  # 1-voxel tumor speck
    labels[12:15, 12:15, 5:8] = 2  # tumor, 27 voxels
    return labels


def test_largest_component_keeps_only_the_biggest_piece():
    labels = _crafted()
    removed = postprocess(labels, {1: PostprocessRule(largest_component=True)}, np.array([1.0, 1.0, 1.0]))
    assert removed == {1: 8}
    assert (labels == 1).sum() == 384 - 8  # the liver block minus the tumor cube inside it
    assert labels[15:17, 15:17, 1:3].max() == 0
    assert (labels == 2).sum() == 8 + 1 + 27  # other labels untouched


def test_min_size_uses_millimetres():
    labels = _crafted()
    # voxels of 2 x 2 x 2 mm = 8 mm3: the speck is 8 mm3, the 8-voxel tumor 64 mm3, the 27-voxel one 216 mm3
    postprocess(labels, {2: PostprocessRule(min_size_mm3=64)}, np.array([2.0, 2.0, 2.0]))
    assert labels[12, 2, 2] == 0
    assert (labels == 2).sum() == 8 + 27
    postprocess(labels, {2: PostprocessRule(min_size_mm3=65)}, np.array([2.0, 2.0, 2.0]))
    assert (labels == 2).sum() == 27


def test_no_rule_changes_nothing():
    labels = _crafted()
    before = labels.copy()
    assert postprocess(labels, {1: PostprocessRule()}, np.ones(3)) == {1: 0}
    np.testing.assert_array_equal(labels, before)


def test_rules_resolve_names_and_indices():
    config = InferConfig(postprocess={"Liver": {"largest_component": True}, "2": {"min_size_mm3": 10}})
    rules = resolve_rules(config, NAMES)
    assert rules[1].largest_component and rules[2].min_size_mm3 == 10
    with pytest.raises(ConfigError, match="unknown label 'spleen'"):
        resolve_rules(InferConfig(postprocess={"spleen": {}}), NAMES)
    with pytest.raises(ConfigError, match="background"):
        resolve_rules(InferConfig(postprocess={"0": {"largest_component": True}}), NAMES)


def test_within_removes_tumors_outside_the_liver():
    labels = _crafted()  # the 8-voxel tumor sits inside the liver block; the speck and the 27-voxel one in background
    removed = postprocess(labels, {2: PostprocessRule(within=[1])}, np.ones(3))
    assert removed == {2: 1 + 27}
    assert (labels == 2).sum() == 8 and labels[4:6, 4:6, 4:6].min() == 2


def test_within_fraction_keeps_a_tumor_on_the_liver_edge():
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[2:10, 2:10, 2:6] = 1
    labels[4:7, 4:7, 5:8] = 2  # pokes out of the liver's top: its shell is 48% liver, 52% background
    shell = np.zeros(labels.shape, bool)
    shell[3:8, 3:8, 4:9] = True
    shell &= labels != 2
    share = float((labels[shell] == 1).mean())
    below, above = PostprocessRule(within=[1], within_fraction=share + 0.01), PostprocessRule(within=[1], within_fraction=share - 0.01)
    kept = labels.copy()
    assert postprocess(kept, {2: above}, np.ones(3)) == {2: 0}
    assert postprocess(labels, {2: below}, np.ones(3)) == {2: 27}


def test_within_sees_the_enclosing_label_after_its_own_cleanup_whatever_the_numbering():
    labels = np.zeros((20, 20, 10), dtype=np.uint8)
    labels[2:12, 2:12, 2:8] = 2  # liver (label 2 here), the big piece
    labels[14:19, 14:19, 2:7] = 2  # a stray liver fragment...
    labels[16, 16, 4] = 1  # ...with a "tumour" (label 1) inside it
    rules = {1: PostprocessRule(within=[2]), 2: PostprocessRule(largest_component=True)}
    removed = postprocess(labels, rules, np.ones(3))
    assert removed[2] == 5 * 5 * 5 - 1 and removed[1] == 1 and not (labels == 1).any()


def test_within_resolves_names_and_refuses_itself_and_regions():
    rules = resolve_rules(InferConfig(postprocess={"tumor": {"within": ["Liver"], "within_fraction": 0.6}}), NAMES)
    assert rules[2].within == [1] and rules[2].within_fraction == 0.6
    with pytest.raises(ConfigError, match="within: unknown label 'kidney'"):
        resolve_rules(InferConfig(postprocess={"tumor": {"within": ["kidney"]}}), NAMES)
    with pytest.raises(ConfigError, match="cannot enclose itself"):
        resolve_rules(InferConfig(postprocess={"tumor": {"within": ["tumor"]}}), NAMES)
    with pytest.raises(ConfigError, match="applies to labels, not to regions"):
        resolve_region_rules(InferConfig(postprocess={"whole tumor": {"within": [1]}}), ["whole tumor", "tumor core"])


def test_lesion_labels_default_to_tumor_like_names():
    assert lesion_label_indices(InferConfig(), NAMES) == [2]
    assert lesion_label_indices(InferConfig(lesion_labels=["liver"]), NAMES) == [1]


def test_label_statistics_volumes_and_lesion_counts():
    labels = _crafted()
    stats = label_statistics(labels, NAMES, np.array([0.5, 0.5, 2.0]), lesion_labels=[2])
    liver_voxels = int((labels == 1).sum())
    assert stats["liver"] == {"index": 1, "voxels": liver_voxels, "volume_ml": pytest.approx(liver_voxels * 0.5 / 1000)}
    assert stats["tumor"]["lesions"] == 3
    assert "lesions" not in stats["liver"]
    assert "background" not in stats


# --- region rules (nnU-Net regions, BraTS) -----------------------------------------------------
BRATS_REGIONS = [(1, 2, 3, 4), (1, 3, 4), (4,)]  # whole tumour, tumour core, enhancing tumour
BRATS_ORDER = [2, 1, 4]
REGION_NAMES = ["whole tumor", "tumor core", "enhancing tumor"]


def _two_tumours() -> np.ndarray:
    """A painted BraTS map: a big tumour (oedema 2 around core 1 around enhancing 4) and a small separate one."""
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[2:16, 2:16, 2:16] = 2
    labels[5:13, 5:13, 5:13] = 1
    labels[7:11, 7:11, 7:11] = 4
    labels[22:27, 22:27, 22:27] = 2  # the small one: oedema with a core and an enhancing speck
    labels[23:26, 23:26, 23:26] = 1
    labels[24, 24, 24] = 4
    labels[2:4, 2:4, 14:16] = 4  # enhancing voxels inside the big tumour's oedema, apart from its core
    return labels


def test_largest_whole_tumour_takes_its_nested_regions_along():
    labels = _two_tumours()
    removed = postprocess_regions(labels, BRATS_REGIONS, BRATS_ORDER, {0: PostprocessRule(largest_component=True)}, np.ones(3))
    assert removed == {0: 125}
    assert labels[22:27, 22:27, 22:27].max() == 0  # the small tumour went, core and enhancing included
    assert (labels[2:4, 2:4, 14:16] == 4).all()  # inside the largest whole tumour: untouched


def test_largest_component_per_region_repaints_what_an_inner_region_loses():
    labels = _two_tumours()
    rules = {position: PostprocessRule(largest_component=True) for position in range(3)}
    removed = postprocess_regions(labels, BRATS_REGIONS, BRATS_ORDER, rules, np.ones(3))
    assert removed == {0: 125, 1: 8, 2: 0}  # the stray enhancing voxels are a second core component
    assert (labels[2:4, 2:4, 14:16] == 2).all()  # still whole tumour, no longer core or enhancing: oedema
    assert (labels[7:11, 7:11, 7:11] == 4).all() and (labels == 4).sum() == 64


def test_region_rules_resolve_by_region_name_beside_label_rules():
    config = InferConfig(postprocess={"Whole Tumor": {"largest_component": True}, "necrosis": {"min_size_mm3": 5}})
    names = {0: "background", 1: "necrosis", 2: "oedema", 4: "enhancing tumor"}
    assert list(resolve_region_rules(config, REGION_NAMES)) == [0]
    assert list(resolve_rules(config, names, REGION_NAMES)) == [1]
    with pytest.raises(ConfigError, match="its regions are whole tumor, tumor core, enhancing tumor"):
        resolve_rules(InferConfig(postprocess={"core": {}}), names, REGION_NAMES)

"""Segment codes: every code comes from pydicom's DICOM context groups, names map to the right concept."""

from __future__ import annotations

import pytest
from pydicom.sr._cid_dict import cid_concepts
from pydicom.sr.codedict import codes

from medseg.io.segment_codes import LOCAL_SCHEME, SYNONYMS, code_for_label, words


def _members(cid: int) -> set[str]:
    return {keyword for keywords in cid_concepts[cid].values() for keyword in keywords}


@pytest.mark.parametrize("keyword", sorted(set(SYNONYMS.values())))
def test_every_curated_keyword_is_a_segmentation_property_type(keyword):
    """CID 7151 (Segmentation Property Types) holds every type the table can produce: no invented codes."""
    assert keyword in _members(7151)


@pytest.mark.parametrize(
    ("name", "category", "keyword"),
    [
        ("liver", "AnatomicalStructure", "Liver"),
        ("Spleen", "AnatomicalStructure", "Spleen"),
        ("pancreas", "AnatomicalStructure", "Pancreas"),
        ("small_bowel", "AnatomicalStructure", "SmallIntestine"),
        ("vertebrae_L1", "AnatomicalStructure", "L1Vertebra"),
        ("inferior_vena_cava", "AnatomicalStructure", "InferiorVenaCava"),
        ("tumour", "MorphologicallyAbnormalStructure", "Neoplasm"),
        ("lesion", "MorphologicallyAbnormalStructure", "Lesion"),
        ("oedema", "MorphologicallyAbnormalStructure", "Edema"),
        ("non-enhancing tumour", "MorphologicallyAbnormalStructure", "NonEnhancingLesion"),
        ("necrosis", "MorphologicallyAbnormalStructure", "Necrosis"),
        ("grey matter", "AnatomicalStructure", "GrayMatter"),
    ],
)
def test_common_names_get_their_dicom_concept(name, category, keyword):
    coding = code_for_label(name)
    assert coding.standard
    assert coding.category == getattr(codes.cid7150, category)
    assert coding.property_type == getattr(codes.cid7151, keyword)


def test_laterality_becomes_a_modifier_and_numbers_are_dropped():
    left = code_for_label("kidney_left")
    assert left.property_type == codes.cid7151.Kidney and left.modifier == codes.cid244.Left
    rib = code_for_label("rib_right_7")
    assert rib.property_type == codes.cid7151.Rib and rib.modifier == codes.cid244.Right
    assert code_for_label("lung").modifier is None


def test_lesion_in_an_organ_is_the_lesion_with_the_organ_as_region():
    coding = code_for_label("kidney_cyst_left")
    assert coding.property_type == codes.cid7151.Cyst and coding.anatomic_regions == (codes.cid7151.Kidney,)
    assert coding.modifier == codes.cid244.Left


@pytest.mark.parametrize("name", ["Anterior", "Posterior", "gluteus_maximus_left", "thing 42", "portal_vein_and_splenic_vein"])
def test_unknown_names_get_the_generic_local_code_not_a_guess(name):
    coding = code_for_label(name)
    assert not coding.standard and coding.property_type.scheme_designator == LOCAL_SCHEME
    assert coding.property_type.meaning == name and len(coding.property_type.value) <= 16  # CodeValue is SH
    assert coding.category == codes.cid7150.SpatialAndRelationalConcept


def test_long_names_keep_distinct_local_codes():
    a, b = code_for_label("some_unknown_structure_one"), code_for_label("some_unknown_structure_two")
    assert a.property_type.value != b.property_type.value and len(a.property_type.value) <= 16


def test_words_split_snake_camel_and_spaces_alike():
    assert words("kidney_left") == words("KidneyLeft") == words("kidney left") == ["kidney", "left"]

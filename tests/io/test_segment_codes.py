"""Segment codes: codes come from pydicom's DICOM context groups (or the few SNOMED CT structures they lack),
names map to the right concept."""

from __future__ import annotations

import json

import pytest
from pydicom.sr._cid_dict import cid_concepts
from pydicom.sr._concepts_dict import concepts
from pydicom.sr.codedict import codes

from medseg.io.segment_codes import LOCAL_SCHEME, SCT_STRUCTURES, SYNONYMS, code_for_label, words


def _members(cid: int) -> set[str]:
    return {keyword for keywords in cid_concepts[cid].values() for keyword in keywords}


@pytest.mark.parametrize("keyword", sorted(set(SYNONYMS.values())))
def test_every_curated_keyword_is_a_segmentation_property_type(keyword):
    """CID 7151 (Segmentation Property Types) holds every type the table can produce (or its left and right forms,
    e.g. LeftAuricularAppendage), unless it is one of the few SNOMED CT structures DICOM lacks: no invented codes."""
    members = _members(7151)
    assert keyword in members or keyword in SCT_STRUCTURES or {f"Left{keyword}", f"Right{keyword}"} <= members


def test_sct_structures_only_fill_gaps_in_dicom():
    """A concept DICOM's groups hold must come from pydicom, never from the typed-in table (one owner per code)."""
    in_dicom = {code for keywords in concepts["SCT"].values() for code, (_, cids) in keywords.items() if cids}
    assert not {code for code, _ in SCT_STRUCTURES.values()} & in_dicom
    assert len({code for code, _ in SCT_STRUCTURES.values()}) == len(SCT_STRUCTURES)


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
    lesion = code_for_label("lesion_2")
    assert lesion.property_type == codes.cid7151.Lesion and lesion.modifier is None
    assert code_for_label("rib_13").property_type == codes.cid7151.Rib  # no thirteenth rib concept: the rib
    assert code_for_label("lung").modifier is None


def test_a_concept_that_names_its_side_takes_no_modifier_and_never_the_other_side():
    middle = code_for_label("lung_middle_lobe_right")
    assert middle.property_type == codes.cid7151.MiddleLobeOfRightLung and middle.modifier is None
    appendage = code_for_label("atrial_appendage_left")  # DICOM has only the sided concepts
    assert appendage.property_type == codes.cid7151.LeftAuricularAppendage and appendage.modifier is None
    assert not code_for_label("lung_middle_lobe_left").standard


#: The 13 TotalSegmentator `total` names that had only the local code, with the SNOMED CT concept each now gets.
TOTALSEG_GAPS = [
    ("vertebrae_S1", "65985001", None), ("atrial_appendage_left", "33626005", None),
    ("portal_vein_and_splenic_vein", "110765007", None),
    ("gluteus_maximus_left", "206007", "Left"), ("gluteus_maximus_right", "206007", "Right"),
    ("gluteus_medius_left", "78333006", "Left"), ("gluteus_medius_right", "78333006", "Right"),
    ("gluteus_minimus_left", "75297007", "Left"), ("gluteus_minimus_right", "75297007", "Right"),
    ("autochthon_left", "244849004", "Left"), ("autochthon_right", "244849004", "Right"),
    ("iliopsoas_left", "68455001", "Left"), ("iliopsoas_right", "68455001", "Right"),
]


@pytest.mark.parametrize(("name", "code", "side"), TOTALSEG_GAPS)
def test_totalsegmentator_structures_dicom_lacks_get_their_snomed_concept(name, code, side):
    coding = code_for_label(name)
    assert coding.standard and coding.category == codes.cid7150.AnatomicalStructure
    assert (coding.property_type.scheme_designator, coding.property_type.value) == ("SCT", code)
    assert coding.modifier == (getattr(codes.cid244, side) if side else None)


def test_numbered_ribs_are_told_apart():
    """rib_left_1..12: twelve distinct concepts (First rib .. Twelfth rib), each with its side."""
    ribs = [code_for_label(f"rib_left_{k}") for k in range(1, 13)]
    assert len({rib.property_type.value for rib in ribs}) == 12 and all(rib.modifier == codes.cid244.Left for rib in ribs)
    assert (ribs[0].property_type.value, ribs[0].property_type.meaning) == ("48535007", "First rib")
    assert code_for_label("rib_right_12").property_type.value == "43993008"


def test_every_totalsegmentator_structure_gets_a_standard_code(shared_file):
    names = json.loads(shared_file("totalseg_example/label_map.json").read_text())["total"]
    local = [name for name in names.values() if not code_for_label(name).standard]
    assert len(names) == 117 and local == []


def test_lesion_in_an_organ_is_the_lesion_with_the_organ_as_region():
    coding = code_for_label("kidney_cyst_left")
    assert coding.property_type == codes.cid7151.Cyst and coding.anatomic_regions == (codes.cid7151.Kidney,)
    assert coding.modifier == codes.cid244.Left


@pytest.mark.parametrize("name", ["Anterior", "Posterior", "quadratus_lumborum_left", "thing 42", "aorta_and_vena_cava"])
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

"""Coded meaning of a segment (DICOM-SEG): SNOMED CT category and type from a label's name.

Codes come from pydicom's copy of the DICOM context groups wherever the concept is there: the
property *type* must be a member of one of the category-specific groups CID 7191-7198 (Tissue,
Anatomical Structure, Physical Object, Morphologically Abnormal Structure, ...), and the *category*
(CID 7150) is the one that group belongs to. What medseg adds is the small curated vocabulary
below: the names models actually use ("tumour", "small_bowel", "vertebrae_L1", "kidney_left",
BraTS' "non-enhancing tumour") mapped to the DICOM keywords they mean, and :data:`SCT_STRUCTURES`,
a few SNOMED CT body structures DICOM's groups lack but TotalSegmentator's labels need (the 12
numbered ribs, S1, the gluteal and iliopsoas muscles...): the concepts TotalSegmentator's own DICOM
output codes them with. Laterality ("kidney_left") becomes a modifier, unless the concept names the
side itself ("Left auricular appendage", "Middle lobe of right lung").

A name that matches nothing gets a generic code: category "Spatial and Relational Concept" (the
CID 7150 category that claims neither anatomy nor pathology) and a type from the private coding
scheme ``99MEDSEG`` whose meaning is the label's name. Guessing an organ from a partial word match
would put a wrong SNOMED code into a PACS, which is worse than an honest local code.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache

from pydicom.sr._cid_dict import cid_concepts
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

#: Private coding scheme (PS3.3 8.2: designators starting with "99" are local) for unmatched names.
LOCAL_SCHEME = "99MEDSEG"

#: Category-specific property-type groups, searched in this order (a few keywords, e.g. "Tissue",
#: sit in two groups), and the CID 7150 category each one belongs to.
_TYPE_GROUPS = (
    (7192, "AnatomicalStructure"),
    (7194, "MorphologicallyAbnormalStructure"),
    (7191, "Tissue"),
    (7193, "PhysicalObject"),
    (7197, "BodySubstance"),
    (7198, "Substance"),
    (7195, "Function"),
    (7196, "SpatialAndRelationalConcept"),
)
_GENERIC_CATEGORY = "SpatialAndRelationalConcept"

#: Names (lower case, words joined by one space, laterality and numbers removed) -> DICOM keyword.
#: Names equal to a keyword ("liver", "spinal cord", "inferior vena cava") need no entry.
SYNONYMS: dict[str, str] = {
    # lesions and tumour sub-regions (BraTS, KiTS, LiTS, MSD)
    "tumor": "Neoplasm", "tumour": "Neoplasm", "cancer": "Neoplasm", "carcinoma": "Neoplasm", "malignancy": "Neoplasm",
    "primary tumor": "NeoplasmPrimary", "primary tumour": "NeoplasmPrimary",
    "metastasis": "NeoplasmSecondary", "metastases": "NeoplasmSecondary",
    "enhancing tumor": "EnhancingLesion", "enhancing tumour": "EnhancingLesion",
    "non enhancing tumor": "NonEnhancingLesion", "non enhancing tumour": "NonEnhancingLesion",
    "nonenhancing tumor": "NonEnhancingLesion", "nonenhancing tumour": "NonEnhancingLesion",
    "oedema": "Edema", "peritumoral edema": "Edema", "peritumoral oedema": "Edema",
    "necrotic": "Necrosis", "necrotic core": "Necrosis", "necrotic tumor core": "Necrosis",
    "haemorrhage": "Hemorrhage", "bleed": "Hemorrhage", "bleeding": "Hemorrhage",
    # organs under the names segmentation datasets use
    "urinary bladder": "Bladder", "gall bladder": "Gallbladder", "small bowel": "SmallIntestine",
    "large bowel": "LargeIntestine", "thyroid gland": "Thyroid", "clavicula": "Clavicle",
    "lung upper lobe": "UpperLobeOfLung", "lung lower lobe": "LowerLobeOfLung", "lung middle lobe": "MiddleLobeOfRightLung",
    "iliac vena": "IliacVein", "grey matter": "GrayMatter", "csf": "CerebrospinalFluid",
    "brachiocephalic trunk": "InnominateArtery", "brachiocephalic vein": "InnominateVein",
    "costal cartilages": "CostalCartilage",
    "vertebrae": "Vertebra", "ribs": "Rib", "lungs": "Lung", "kidneys": "Kidney",
    "fat": "AdiposeTissue", "muscle": "MuscleTissue", "bone": "BoneTissue",
    "atrial appendage": "AuricularAppendage", "erector spinae": "ErectorSpinaeMuscle",
    # TotalSegmentator's muscles (SCT_STRUCTURES): "autochthon" is its name for the deep (intrinsic) back muscles
    "gluteus maximus": "GluteusMaximusMuscle", "gluteus medius": "GluteusMediusMuscle",
    "gluteus minimus": "GluteusMinimusMuscle", "iliopsoas": "IliopsoasMuscle", "autochthon": "DeepMuscleOfBack",
}
#: SNOMED CT body structures no DICOM context group holds (so pydicom has no keyword for them), under a
#: keyword of the same style: keyword -> (SCT code, meaning). Each is the concept TotalSegmentator's DICOM
#: output uses for that structure, except gluteus maximus: its "Structure of" concept (206007, as DICOM uses
#: for every other muscle) rather than "Entire gluteus maximus muscle" (181674001).
SCT_STRUCTURES: dict[str, tuple[str, str]] = {
    "S1Vertebra": ("65985001", "S1 vertebra"),
    "GluteusMaximusMuscle": ("206007", "Gluteus maximus muscle"),
    "GluteusMediusMuscle": ("78333006", "Gluteus medius muscle"),
    "GluteusMinimusMuscle": ("75297007", "Gluteus minimus muscle"),
    "IliopsoasMuscle": ("68455001", "Iliopsoas muscle"),
    "DeepMuscleOfBack": ("244849004", "Deep muscle of back"),
    "PortalVeinAndSplenicVein": ("110765007", "Portal vein and splenic vein"),
    "FirstRib": ("48535007", "First rib"), "SecondRib": ("78247007", "Second rib"), "ThirdRib": ("25888004", "Third rib"),
    "FourthRib": ("25523003", "Fourth rib"), "FifthRib": ("15339008", "Fifth rib"), "SixthRib": ("59558009", "Sixth rib"),
    "SeventhRib": ("24915002", "Seventh rib"), "EighthRib": ("5953002", "Eighth rib"), "NinthRib": ("22565002", "Ninth rib"),
    "TenthRib": ("77644006", "Tenth rib"), "EleventhRib": ("58830002", "Eleventh rib"), "TwelfthRib": ("43993008", "Twelfth rib"),
}
_ORDINALS = ("First", "Second", "Third", "Fourth", "Fifth", "Sixth", "Seventh", "Eighth", "Ninth", "Tenth", "Eleventh", "Twelfth")
_LATERALITY = {"left": "Left", "right": "Right", "bilateral": "Bilateral"}
_VERTEBRA = re.compile(r"^(?:vertebrae?|vert)\s+([ctls]\d{1,2})$")


@dataclass(frozen=True)
class SegmentCoding:
    """What a segment is, as DICOM codes (the label's own name stays the SegmentLabel)."""

    category: Code
    property_type: Code
    modifier: Code | None = None  # laterality of the property type (or of the anatomic region)
    anatomic_regions: tuple[Code, ...] = field(default_factory=tuple)
    standard: bool = True  # False: the generic local code

    def describe(self) -> str:
        text = f"{self.property_type.meaning} ({self.property_type.scheme_designator} {self.property_type.value})"
        return f"{text}, {self.modifier.meaning}" if self.modifier is not None else text


def words(name: str) -> list[str]:
    """Lower-case words of a label name: ``"kidney_left"``, ``"KidneyLeft"`` and ``"kidney left"`` agree."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    return [word for word in re.split(r"[^a-z0-9]+", spaced.lower()) if word]


@lru_cache(maxsize=1)
def _keyword_groups() -> dict[str, int]:
    """DICOM keyword -> the first category-specific group (CID 7191-7198) holding it."""
    found: dict[str, int] = {}
    for cid, _category in _TYPE_GROUPS:
        for keywords in cid_concepts[cid].values():
            for keyword in keywords:
                found.setdefault(keyword, cid)
    return found


def _concept(keyword: str) -> tuple[Code, Code] | None:
    """(category, type) for a DICOM keyword of CID 7191-7198 or of :data:`SCT_STRUCTURES`, else None."""
    cid = _keyword_groups().get(keyword)
    if cid is None:
        if keyword in SCT_STRUCTURES:
            value, meaning = SCT_STRUCTURES[keyword]
            return codes.cid7150.AnatomicalStructure, Code(value, "SCT", meaning)
        return None
    category = dict(_TYPE_GROUPS)[cid]
    return getattr(codes.cid7150, category), getattr(getattr(codes, f"cid{cid}"), keyword)


def _camel(phrase: str) -> str:
    return "".join(word[:1].upper() + word[1:] for word in phrase.split())


def _lookup(phrase: str, number: int | None = None, side: str | None = None) -> tuple[Code, Code] | None:
    """A phrase as a synonym, as a keyword itself ("spinal cord" -> SpinalCord), as a numbered vertebra or rib,
    and only when none of those exists, as a sided keyword ("atrial appendage" + Left -> LeftAuricularAppendage)."""
    vertebra = _VERTEBRA.match(phrase)
    candidates = [SYNONYMS.get(phrase), _camel(phrase)]
    if vertebra:
        candidates.insert(0, f"{vertebra.group(1).upper()}Vertebra")
    if phrase in ("rib", "ribs") and number is not None and 1 <= number <= len(_ORDINALS):
        candidates.insert(0, f"{_ORDINALS[number - 1]}Rib")
    if side is not None:
        candidates += [f"{side}{keyword}" for keyword in candidates if keyword]
    for keyword in candidates:
        if keyword and (found := _concept(keyword)) is not None:
            return found
    return None


def _side_modifier(concept: Code, side: str | None) -> tuple[bool, Code | None]:
    """(usable, laterality modifier): none when the concept names its side itself; unusable when it names the other side."""
    named = {word for word in words(concept.meaning) if word in ("left", "right")}
    if not named:
        return True, getattr(codes.cid244, side) if side is not None else None
    return side is None or side.lower() in named, None


def _local_code(name: str) -> Code:
    """A stable private code: the name itself when it fits a CodeValue (16 characters), else name + digest."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").upper() or "UNNAMED"
    if len(slug) > 16:
        slug = f"{slug[:9]}-{hashlib.sha1(name.encode()).hexdigest()[:6].upper()}"
    return Code(slug, LOCAL_SCHEME, name[:64] or "unnamed")


def code_for_label(name: str) -> SegmentCoding:
    """SNOMED CT codes for a label name, or the generic local code when nothing matches (see module doc)."""
    tokens = words(name)
    sides = [_LATERALITY[t] for t in tokens if t in _LATERALITY]
    side = sides[0] if len(sides) == 1 else None
    numbers = [int(t) for t in tokens if t.isdigit()]
    core = [t for t in tokens if t not in _LATERALITY and not t.isdigit()]
    phrase = " ".join(core)
    found = _lookup(phrase, numbers[0] if len(numbers) == 1 else None, side) if phrase else None
    if found is not None:
        usable, modifier = _side_modifier(found[1], side)
        if usable:
            return SegmentCoding(found[0], found[1], modifier)
    if len(core) > 1:  # "liver tumour", "kidney cyst": an abnormal structure in an organ
        head, organ = _lookup(core[-1]), _lookup(" ".join(core[:-1]))
        if head is not None and head[0] == codes.cid7150.MorphologicallyAbnormalStructure:
            regions = (organ[1],) if organ is not None and organ[0] == codes.cid7150.AnatomicalStructure else ()
            return SegmentCoding(head[0], head[1], getattr(codes.cid244, side) if side is not None else None, regions)
    return SegmentCoding(getattr(codes.cid7150, _GENERIC_CATEGORY), _local_code(name), None, (), standard=False)

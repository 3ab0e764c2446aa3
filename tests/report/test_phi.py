"""No patient identifiers in the report unless --include-phi, even when the images are DICOM with names and IDs."""

import re

import numpy as np
import pydicom
import pytest

from medseg.io import read_volume
from medseg.io.dicom_write import write_dicom_series
from medseg.report import build_report
from tests.report._synthetic import make_evaluation

IDENTIFIERS = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-424242",
    "PatientBirthDate": "19700101",
    "StudyDate": "20240102",
    "AccessionNumber": "ACC-977",
    "InstitutionName": "St Elsewhere Hospital",
}


def text_only(html: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", html)


@pytest.fixture(scope="module")
def dicom_evaluation(tmp_path_factory):
    """A two-case evaluation whose images are DICOM series (folders named by case id) carrying identifiers."""
    root = tmp_path_factory.mktemp("phi")
    synthetic = make_evaluation(root / "data", cases=("case_a", "case_b"))
    images = root / "dicom_images"
    for nifti in sorted(synthetic.images.iterdir()):
        case = nifti.name.removesuffix("_0000.nii.gz")
        volume = read_volume(nifti)
        volume = volume.with_array(np.rint(volume.array).astype(np.int16))
        for path in write_dicom_series(volume, images / case, modality="CT"):
            ds = pydicom.dcmread(path)
            for tag, value in IDENTIFIERS.items():
                setattr(ds, tag, value)
            ds.save_as(path)
    return synthetic, images


def test_report_has_no_identifiers_or_paths_by_default(dicom_evaluation, tmp_path):
    synthetic, images = dicom_evaluation
    html = build_report(synthetic.eval_dir, tmp_path / "report.html", images=images, progress=False).read_text()
    assert html.count('<figure id="case-') == 2
    html = text_only(html)  # short strings like "1970" could occur by chance inside base64 image data and "CT window W400/L40 HU" in html  # the DICOM images were used
    for value in IDENTIFIERS.values():
        assert value not in html
    assert "Doe" not in html and "424242" not in html and "1970" not in html
    assert str(synthetic.root) not in html and str(images) not in html and str(tmp_path) not in html
    assert "/" + synthetic.root.parts[1] + "/" not in html  # no absolute path of any kind (e.g. /tmp/...)
    assert "--include-phi" in html  # the report says how identifiers could be shown


def test_include_phi_shows_identifiers_and_paths(dicom_evaluation, tmp_path):
    synthetic, images = dicom_evaluation
    html = build_report(synthetic.eval_dir, tmp_path / "report.html", images=images, include_phi=True, progress=False).read_text()
    for value in ("Doe^Jane", "PID-424242", "19700101", "20240102", "St Elsewhere Hospital"):
        assert value in html
    assert str(images.resolve() / "case_a") in html and str(synthetic.pred) in html
    assert 'id="phi-table"' in html and "contains identifying information" in html

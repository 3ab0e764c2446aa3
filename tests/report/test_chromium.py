"""The report renders in headless Chromium: screenshot not blank, tables and figures in the DOM, PDF printed."""

import numpy as np
import pytest
from PIL import Image

from medseg.report import build_report
from medseg.report.chromium import dump_dom, find_chromium, screenshot

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="no Chromium binary (chromium, chromium-browser, google-chrome) on PATH: install it with `apt-get install -y chromium` or set MEDSEG_CHROMIUM",
)


@pytest.fixture(scope="module")
def rendered(synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("rendered")
    return build_report(synthetic.eval_dir, out / "report.html", images=synthetic.images, max_cases=2, pdf=True, progress=False)


def test_screenshot_is_not_blank(rendered, tmp_path):
    png = screenshot(rendered, tmp_path / "shot.png", width=1400, height=4000)
    assert png.is_file() and png.stat().st_size > 50_000
    picture = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert picture.shape == (4000, 1400)
    assert picture.std() > 20  # text, tables, plots and CT thumbnails, not a blank page
    inked_rows = (picture < 200).any(axis=1).mean()
    assert inked_rows > 0.5  # content all the way down, not one line of error text
    assert (picture < 60).mean() > 0.01  # dark pixels: the CT overlays rendered


def test_dom_has_tables_and_figures(rendered):
    dom = dump_dom(rendered)
    for element in ('id="dataset-summary"', 'id="per-label-overlap"', 'id="per-label-distance"', 'id="lesion-detection"', 'id="worst-cases"', 'id="plot-dice"', 'id="plot-size-bins"', 'id="case-case_b"'):
        assert element in dom, element
    assert dom.count("<img src=\"data:image/png;base64,") == 6 + 1 + 2
    assert "Per-label metrics" in dom and "Lesion detection" in dom


def test_pdf_is_written_without_browser_header(rendered):
    pdf = rendered.with_suffix(".pdf")
    data = pdf.read_bytes()
    assert data[:5] == b"%PDF-" and len(data) > 50_000 and data.count(b"/Type /Page\n") >= 2
    # no file URL or path anywhere in the PDF, metadata included (print_pdf also turns off Chromium's
    # header/footer, which would draw the URL and the date on every page as glyphs)
    assert b"file:" not in data and str(rendered.parent).encode() not in data

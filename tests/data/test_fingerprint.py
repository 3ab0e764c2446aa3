"""Fingerprint: spacing in RAS, cropped shapes, foreground intensity statistics, class voxels, reuse."""

from __future__ import annotations

import os

import numpy as np
import pytest

from medseg.data.config import FingerprintConfig
from medseg.data.dataset import load_dataset
from medseg.data.fingerprint import compute_fingerprint, load_or_compute_fingerprint
from medseg.errors import InputError
from tests.data._builders import make_msd, phantom


def test_spacing_is_reported_in_ras_whatever_the_storage_order(tmp_path):
    root = make_msd(tmp_path / "ds", cases=3, spacings=[(0.8, 1.0, 3.0)], orientations=["RAS", "LPS", "PSR"])
    fingerprint = compute_fingerprint(load_dataset(root), workers=1, progress=False)
    assert fingerprint["orientations"] == ["LPS", "PSR", "RAS"]
    for case in fingerprint["cases"]:
        assert case["spacing"] == pytest.approx([0.8, 1.0, 3.0])
        assert case["shape_raw"] == [24, 20, 12]
    assert fingerprint["median_spacing"] == pytest.approx([0.8, 1.0, 3.0])


def test_class_voxels_crop_and_ct_foreground_statistics(tmp_path):
    root = make_msd(tmp_path / "ds", cases=2, modality="CT")
    fingerprint = compute_fingerprint(load_dataset(root), workers=1, progress=False)
    labels = [phantom(seed=i)[1] for i in range(2)]
    expected = {str(v): int(sum((label == v).sum() for label in labels)) for v in (0, 1, 2)}
    assert fingerprint["class_voxels"] == expected
    assert sum(fingerprint["class_frequency"].values()) == pytest.approx(1.0)
    # CT has no zero background, so the crop keeps everything
    assert fingerprint["median_crop_fraction"] == pytest.approx(1.0)
    stats = fingerprint["intensity_foreground"][0]
    # foreground = organ (60 HU) and tumor (20 HU) plus noise of 10 HU
    assert 20 < stats["mean"] < 60 and 10 < stats["std"] < 30
    assert stats["percentile_00_5"] < 20 < 60 < stats["percentile_99_5"]
    assert fingerprint["channels"] == [{"index": 0, "name": "CT", "modality": "CT"}]


def test_mr_zero_background_is_cropped(tmp_path):
    root = make_msd(tmp_path / "mr", cases=1, modality="MR", shape=(30, 30, 20))
    case = compute_fingerprint(load_dataset(root), workers=1, progress=False)["cases"][0]
    assert all(c <= r for c, r in zip(case["shape_cropped"], case["shape_raw"]))
    assert case["crop_fraction"] < 1.0


def test_sampling_is_bounded_and_seeded(tmp_path):
    root = make_msd(tmp_path / "ds", cases=3)
    description = load_dataset(root)
    config = FingerprintConfig(samples_per_case=100, seed=3)
    first = compute_fingerprint(description, config, workers=1, progress=False)
    second = compute_fingerprint(description, config, workers=1, progress=False)
    assert first["intensity_foreground"][0]["samples"] == 300
    assert first["intensity_foreground"] == second["intensity_foreground"]
    other = compute_fingerprint(description, FingerprintConfig(samples_per_case=100, seed=4), workers=1, progress=False)
    assert other["intensity_foreground"][0]["mean"] != first["intensity_foreground"][0]["mean"]


def test_fingerprint_is_reused_until_a_file_changes(tmp_path):
    root = make_msd(tmp_path / "ds", cases=2)
    description = load_dataset(root)
    path = tmp_path / "work" / "fingerprint.json"
    first = load_or_compute_fingerprint(description, path, workers=1, progress=False)
    assert path.is_file()
    path.write_text(path.read_text().replace('"num_cases": 2', '"num_cases": 2, "marker": true'))
    assert load_or_compute_fingerprint(description, path, workers=1, progress=False).get("marker") is True
    image = root / "imagesTr" / "case_000.nii.gz"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = load_or_compute_fingerprint(description, path, workers=1, progress=False)
    assert "marker" not in again and again["digest"] != first["digest"]


def test_unreadable_cases_are_listed_in_one_error(tmp_path):
    root = make_msd(tmp_path / "ds", cases=3)
    (root / "labelsTr" / "case_001.nii.gz").unlink()
    (root / "imagesTr" / "case_002.nii.gz").write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"2 case\(s\).*case_001.*case_002"):
        compute_fingerprint(load_dataset(root), workers=1, progress=False)


def test_parallel_workers_give_the_same_fingerprint(tmp_path):
    description = load_dataset(make_msd(tmp_path / "ds", cases=3, orientations=["RAS", "LPS"]))
    serial = compute_fingerprint(description, workers=1, progress=False)
    parallel = compute_fingerprint(description, workers=2, progress=False)
    assert serial["cases"] == parallel["cases"]
    assert np.allclose(serial["intensity_foreground"][0]["mean"], parallel["intensity_foreground"][0]["mean"])


def test_nan_image_is_refused(tmp_path):
    from tests.data._builders import make_broken

    with pytest.raises(InputError, match="case_003.*NaN"):
        compute_fingerprint(load_dataset(make_broken(tmp_path / "broken")), workers=1, progress=False)


def test_label_values_dataset_json_does_not_declare_are_refused_even_from_a_reused_fingerprint(tmp_path):
    """Plan and train fingerprint through load_or_compute_fingerprint: an undeclared value is refused in `dataset check`'s words,
    also when the label files are unchanged (fingerprint reused) and only dataset.json dropped a label."""
    import json

    from medseg.data.check import check_dataset

    root = make_msd(tmp_path / "ds", cases=2)
    path = tmp_path / "work" / "fingerprint.json"
    load_or_compute_fingerprint(load_dataset(root), path, workers=1, progress=False)
    data = json.loads((root / "dataset.json").read_text())
    data["labels"] = {"0": "background", "1": "organ"}
    (root / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(InputError) as refused:
        load_or_compute_fingerprint(load_dataset(root), path, workers=1, progress=False)
    checked = next(problem for problem in check_dataset(root, workers=1) if problem.check == "undeclared_label")
    assert refused.value.path == root / "labelsTr" / "case_000.nii.gz" and checked.path == str(refused.value.path)
    assert refused.value.problem.startswith(checked.message + "; 1 more case(s) like it")
    assert "label values [2] are not declared in dataset.json (declared: [0, 1])" in refused.value.problem

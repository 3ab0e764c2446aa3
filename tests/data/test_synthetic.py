"""The synthetic tumor dataset: deterministic, MSD-valid, plausible HU, and geometrically exact in world space."""

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from medseg.data.synthetic import SynthConfig, case_phantom, make_synthetic_dataset, random_phantom, render
from medseg.errors import ConfigError
from medseg.io import read_volume
from medseg.io.geometry import voxel_to_world
from medseg.io.volume import Volume

# Small field of view keeps every test well under a second per case.
SMALL = {"fov_mm": (128.0, 128.0, 96.0)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    return make_synthetic_dataset(out, cases=5, seed=7, test_cases=1, **SMALL)


def _cases(folder):
    return json.loads((folder / "synthetic.json").read_text())["cases"]


def _world_points(volume: Volume, mask: np.ndarray) -> np.ndarray:
    return voxel_to_world(volume.affine, np.argwhere(mask))


def test_same_seed_gives_identical_arrays_and_other_seed_differs(tmp_path):
    first = make_synthetic_dataset(tmp_path / "a", cases=2, seed=3, **SMALL)
    second = make_synthetic_dataset(tmp_path / "b", cases=2, seed=3, **SMALL)
    other = make_synthetic_dataset(tmp_path / "c", cases=2, seed=4, **SMALL)
    for sub in ("imagesTr/case_000.nii.gz", "labelsTr/case_000.nii.gz", "imagesTr/case_001.nii.gz"):
        a, b = read_volume(first / sub), read_volume(second / sub)
        np.testing.assert_array_equal(a.array, b.array)
        np.testing.assert_array_equal(a.affine, b.affine)
    assert (first / "synthetic.json").read_text() == (second / "synthetic.json").read_text()
    a, c = read_volume(first / "imagesTr/case_000.nii.gz"), read_volume(other / "imagesTr/case_000.nii.gz")
    assert a.shape != c.shape or not np.array_equal(a.array, c.array)


def test_adding_cases_does_not_change_existing_ones(tmp_path):
    few = make_synthetic_dataset(tmp_path / "few", cases=1, seed=5, **SMALL)
    more = make_synthetic_dataset(tmp_path / "more", cases=2, seed=5, test_cases=1, **SMALL)
    np.testing.assert_array_equal(read_volume(few / "imagesTr/case_000.nii.gz").array, read_volume(more / "imagesTr/case_000.nii.gz").array)


def test_dataset_json_is_valid_msd(dataset):
    description = json.loads((dataset / "dataset.json").read_text())
    assert description["modality"] == {"0": "CT"}
    assert description["labels"] == {"0": "background", "1": "liver", "2": "tumor"}
    assert description["tensorImageSize"] == "3D"
    assert description["numTraining"] == len(description["training"]) == 5
    for entry in description["training"]:
        assert (dataset / entry["image"]).is_file() and (dataset / entry["label"]).is_file()
        assert entry["image"].startswith("./imagesTr/") and not entry["image"].endswith("_0000.nii.gz")
    assert description["test"] == ["./imagesTs/case_005.nii.gz"]
    assert (dataset / "imagesTs/case_005.nii.gz").is_file() and (dataset / "labelsTs/case_005.nii.gz").is_file()


def test_images_and_labels_share_grid_types_and_values(dataset):
    seen_tumor = False
    for case in _cases(dataset):
        image = read_volume(dataset / case["image"])
        label = read_volume(dataset / case["label"], role="label")
        assert image.array.dtype == np.int16 and label.array.dtype == np.uint8
        assert image.same_grid(label, atol_mm=1e-4)
        assert set(np.unique(label.array)) <= {0, 1, 2}
        assert list(image.shape) == case["shape"] and image.orientation == case["orientation"]
        seen_tumor |= bool((label.array == 2).any())
    assert seen_tumor


def test_hu_values_are_ct_like(dataset):
    for case in _cases(dataset):
        image = read_volume(dataset / case["image"]).array.astype(float)
        label = read_volume(dataset / case["label"], role="label").array
        liver = image[label == 1]
        assert abs(liver.mean() - 60) < 15, case["case"]
        assert 5 < liver.std() < 35  # noise ~10-20 HU, mildly smoothed, plus texture and partial volume
        corners = np.array([image[i, j, k] for i in (0, -1) for j in (0, -1) for k in (0, -1)])
        assert corners.max() < -850  # air outside the body
        assert image.min() >= -1024 and image.max() <= 3071


def test_orientations_vary_and_include_lps(dataset):
    orientations = [read_volume(dataset / c["image"]).orientation for c in _cases(dataset)]
    assert orientations[:5] == ["RAS", "LPS", "LAS", "PLS", "LPI"]
    spacings = {tuple(c["spacing_mm"]) for c in _cases(dataset)}
    assert len(spacings) > 1
    for spacing in spacings:
        assert 0.7 <= spacing[0] <= 1.0 or 0.7 <= spacing[1] <= 1.0
        assert any(1.5 <= s <= 5.0 for s in spacing)


def test_labels_match_the_phantom_in_world_space(dataset):
    """Every liver/tumor voxel, mapped through its file's affine, lies inside the phantom's liver.

    A flipped or permuted axis (an LPS case written with a RAS affine, say) would put most voxels
    outside, so this checks the geometry of every orientation, not only the arrays.
    """
    config = SynthConfig(**SMALL)
    for index, case in enumerate(_cases(dataset)):
        phantom = case_phantom(7, index, config)
        label = read_volume(dataset / case["label"], role="label")
        organ_points = _world_points(label, label.array >= 1)
        inside = phantom.liver.inside(organ_points)
        assert inside.mean() > 0.995, f"{case['case']} ({case['orientation']}): {inside.mean():.3f}"
        tumor_points = _world_points(label, label.array == 2)
        if len(tumor_points):
            assert phantom.liver.inside(tumor_points).mean() > 0.995
            in_some_tumor = np.zeros(len(tumor_points), bool)
            for tumor in phantom.tumors:
                in_some_tumor |= tumor.blob.inside(tumor_points)
            assert in_some_tumor.mean() > 0.995
        # Liver on the patient's right: +x in RAS world coordinates, whatever the stored orientation.
        centroid = organ_points.mean(axis=0)
        assert centroid[0] > phantom.centre[0] + 5
        assert np.linalg.norm(centroid - np.array(case["liver"]["centre_ras_mm"])) < 12


def test_same_phantom_on_two_grids_gives_the_same_world_anatomy():
    phantom = random_phantom(np.random.default_rng(11), max_tumors=5)
    phantom.tumors = phantom.tumors[:1] or phantom.tumors
    results = []
    for spacing, offset, orientation in (((0.8, 0.8, 2.0), (0, 0, 0), "RAS"), ((1.0, 1.0, 4.0), (3.3, -2.1, 1.7), "PLS"), ((0.9, 0.9, 3.0), (-1.0, 2.0, -3.0), "LPI")):
        shape = tuple(int(round(f / s)) for f, s in zip((160, 160, 120), spacing))
        affine = np.diag([*spacing, 1.0])
        affine[:3, 3] = phantom.centre + np.array(offset) - np.array(spacing) * (np.array(shape) - 1) / 2
        _, labels, _ = render(phantom, affine, shape, 10.0, np.random.default_rng(0))
        stored = Volume(labels, affine, "label").reoriented(orientation)
        assert stored.orientation == orientation
        organ = _world_points(stored, stored.array >= 1)
        voxel_volume = float(np.prod(spacing))
        results.append((organ.mean(axis=0), len(organ) * voxel_volume))
    for centroid, volume in results[1:]:
        assert np.linalg.norm(centroid - results[0][0]) < 1.5
        assert abs(volume - results[0][1]) / results[0][1] < 0.05


def test_bad_setting_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        make_synthetic_dataset(tmp_path / "x", cases=1, orientations=("RAX",))
    with pytest.raises(ConfigError):
        make_synthetic_dataset(tmp_path / "x", cases=1, slice_spacing_mm=(5.0, 1.5))


def test_cli_synth_writes_dataset(tmp_path):
    from medseg.cli import data_cmds

    app = typer.Typer()
    app.callback()(lambda: None)
    data_cmds.register(app)
    result = CliRunner().invoke(app, ["data", "synth", str(tmp_path / "cli"), "--cases", "1", "--seed", "2", "--set", "synth.fov_mm=[96,96,64]", "--set", "synth.bias_hu=0"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "cli" / "synthetic.json").read_text())["config"]
    assert config["fov_mm"] == [96.0, 96.0, 64.0] and config["bias_hu"] == 0 and config["seed"] == 2
    assert (tmp_path / "cli" / "labelsTr" / "case_000.nii.gz").is_file()

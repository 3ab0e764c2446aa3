"""`medseg dataset import`: per-case folders -> nnU-Net v2 dataset (links, conversions, regions, refusals)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.data.dataset import load_dataset
from medseg.data.importer import ImportSpec, import_dataset, resolve_spec
from medseg.errors import ConfigError, InputError
from medseg.io.readers import read_volume
from tests.data._builders import AFFINE_LPS as AFFINE, brats_like, phantom, save_nifti, store_as

def plain_spec(**options) -> ImportSpec:
    return resolve_spec(channels=["FLAIR=flair*", "T1c=T1C_*"], label="OTMultiClass*", **options)


def test_links_nifti_images_converts_float_labels_and_writes_dataset_json(tmp_path):
    src = brats_like(tmp_path / "src")
    report = import_dataset(src, tmp_path / "out", plain_spec())
    dest = tmp_path / "out"
    data = json.loads((dest / "dataset.json").read_text())
    assert data["channel_names"] == {"0": "FLAIR", "1": "T1c"}
    assert data["labels"] == {"background": 0, "label_1": 1, "label_2": 2, "label_4": 4}  # values found in the label maps
    assert data["numTraining"] == 2 and data["file_ending"] == ".nii.gz"
    image = dest / "imagesTr" / "pat00_0001.nii.gz"
    assert image.is_symlink() and image.resolve() == (src / "pat00" / "T1c_subtrMeanDivStd.nii.gz").resolve()
    label = dest / "labelsTr" / "pat01.nii.gz"
    assert not label.is_symlink()  # float-stored: converted
    stored = nib.load(str(label))
    assert np.issubdtype(stored.get_data_dtype(), np.integer)
    assert np.array_equal(stored.affine, AFFINE)
    source = np.asanyarray(nib.load(str(src / "pat01" / "OTMultiClass.nii.gz")).dataobj)
    assert np.array_equal(np.asanyarray(stored.dataobj), source.astype(np.uint8))
    assert (report.linked, report.converted) == (4, 2)
    description = load_dataset(dest)
    assert [case.case_id for case in description.cases] == ["pat00", "pat01"] and not description.has_regions


def test_integer_labels_are_linked_and_hardlinks_work(tmp_path):
    src = brats_like(tmp_path / "src", float_label=False)
    report = import_dataset(src, tmp_path / "out", plain_spec(label_names=["1=organ", "2=tumor", "4=other"], link="hardlink"))
    label = tmp_path / "out" / "labelsTr" / "pat00.nii.gz"
    assert not label.is_symlink() and label.stat().st_ino == (src / "pat00" / "OTMultiClass.nii.gz").stat().st_ino
    assert report.converted == 0
    data = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert data["labels"] == {"background": 0, "organ": 1, "tumor": 2, "other": 4}


def test_mask_zeroes_images_outside_and_keeps_geometry(tmp_path):
    src = brats_like(tmp_path / "src")
    import_dataset(src, tmp_path / "out", plain_spec(mask="brainmask*"))
    dest = tmp_path / "out"
    image = read_volume(dest / "imagesTr" / "pat00_0000.nii.gz")
    source = read_volume(src / "pat00" / "Flair_subtrMeanDivStd.nii.gz")
    mask = read_volume(dest / "masksTr" / "pat00.nii.gz", role="label").array > 0
    assert np.array_equal(image.affine, source.affine) and image.shape == source.shape
    assert np.all(image.array[~mask] == 0) and np.array_equal(image.array[mask], source.array[mask])
    assert (source.array[~mask] != 0).all()  # the source's air was not zero
    description = load_dataset(dest)
    assert description.foreground_mask


def test_brats2015_preset_writes_nnunet_regions_in_order(tmp_path):
    src = brats_like(tmp_path / "src")
    import_dataset(src, tmp_path / "out", resolve_spec(preset="brats2015"))
    text = (tmp_path / "out" / "dataset.json").read_text()
    data = json.loads(text)
    assert list(data["labels"]) == ["background", "whole tumor", "tumor core", "enhancing tumor"]
    assert data["labels"]["tumor core"] == [1, 3, 4] and data["regions_class_order"] == [2, 1, 4]
    description = load_dataset(tmp_path / "out")
    assert description.regions == {"whole tumor": (1, 2, 3, 4), "tumor core": (1, 3, 4), "enhancing tumor": (4,)}
    assert description.labels[1] == "necrosis" and description.labels[4] == "enhancing tumor"
    assert description.foreground_mask  # the preset's brainmask


def test_regions_none_with_preset_gives_plain_brats_labels(tmp_path):
    src = brats_like(tmp_path / "src")
    import_dataset(src, tmp_path / "out", resolve_spec(preset="brats2015", regions="none", mask="none"))
    data = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert data["labels"]["oedema"] == 2 and "regions_class_order" not in data and "foreground_mask" not in data


def test_other_formats_are_converted_with_the_same_grid(tmp_path):
    from medseg.io import Volume, write_volume

    folder = tmp_path / "src" / "case_a"
    folder.mkdir(parents=True)
    image, label = phantom((10, 9, 7), "MR", 3)
    array, affine = store_as(image, np.diag([0.9, 0.9, 2.0, 1.0]), "PSR")
    write_volume(Volume(array, affine), folder / "t2.mha")
    write_volume(Volume(store_as(label, np.eye(4), "PSR")[0], affine, "label"), folder / "seg.nrrd")
    import_dataset(tmp_path / "src", tmp_path / "out", resolve_spec(channels=["T2=t2*"], label="seg*"))
    written = read_volume(tmp_path / "out" / "imagesTr" / "case_a_0000.nii.gz")
    assert np.allclose(written.affine, affine) and np.array_equal(written.array, array)


@pytest.mark.parametrize("problem", ["missing_channel", "two_matches", "shape", "grid"])
def test_refusals_name_the_case_and_write_nothing(tmp_path, problem):
    src = brats_like(tmp_path / "src")
    target = src / "pat01"
    if problem == "missing_channel":
        (target / "T1c_subtrMeanDivStd.nii.gz").unlink()
        expected = "no file matches the channel T1c pattern"
    elif problem == "two_matches":
        (target / "Flair_copy.nii.gz").write_bytes((target / "Flair_subtrMeanDivStd.nii.gz").read_bytes())
        expected = "matches 2 files"
    elif problem == "shape":
        save_nifti(np.zeros((5, 5, 5), np.float32), AFFINE, target / "T1c_subtrMeanDivStd.nii.gz")
        expected = "shape (5, 5, 5) differs"
    else:
        shifted = AFFINE.copy()
        shifted[0, 3] += 2.0
        save_nifti(np.zeros((14, 12, 8), np.float32), shifted, target / "T1c_subtrMeanDivStd.nii.gz")
        expected = "grid differs"
    with pytest.raises(InputError) as caught:
        import_dataset(src, tmp_path / "out", plain_spec())
    assert expected in str(caught.value) and "pat01" in str(caught.value)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no staging folder left behind


def test_missing_label_refused_unless_allowed(tmp_path):
    src = brats_like(tmp_path / "src", cases=3)
    (src / "pat02" / "OTMultiClass.nii.gz").unlink()
    with pytest.raises(InputError, match="label pattern"):
        import_dataset(src, tmp_path / "out", plain_spec())
    report = import_dataset(src, tmp_path / "out", plain_spec(allow_unlabelled=True))
    assert report.test_cases == ["pat02"] and report.dataset_json["numTraining"] == 2
    assert sorted(p.name for p in (tmp_path / "out" / "imagesTs").iterdir()) == ["pat02_0000.nii.gz", "pat02_0001.nii.gz"]


def test_existing_dest_and_bad_options_are_refused(tmp_path):
    src = brats_like(tmp_path / "src", cases=1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.txt").write_text("keep")
    with pytest.raises(InputError, match="not empty"):
        import_dataset(src, tmp_path / "out", plain_spec())
    assert (tmp_path / "out" / "x.txt").read_text() == "keep"
    with pytest.raises(ConfigError, match="region-order"):
        resolve_spec(channels=["A=a*"], label="s*", region_defs=["whole=1,2"])
    with pytest.raises(ConfigError, match="needs a --preset"):
        resolve_spec(channels=["A=a*"], label="s*", regions="brats")
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        resolve_spec(channels=["just-a-pattern"], label="s*")


def test_cli_import_runs_check_and_refuses_in_one_line(tmp_path, run_cli_module):
    src = brats_like(tmp_path / "src")
    result = run_cli_module("dataset", "import", src, tmp_path / "out", "--preset", "brats2015")
    assert result.code == 0, result.err
    out = " ".join(result.out.split())  # rich wraps long lines
    assert "has no problems" in out and "2 training case(s)" in out
    (src / "pat00" / "brainmask.nii.gz").unlink()
    result = run_cli_module("dataset", "import", src, tmp_path / "again", "--preset", "brats2015")
    assert result.code == 2 and result.err.count("error:") == 1 and "mask pattern" in result.err
    assert not (tmp_path / "again").exists()


@pytest.fixture
def run_cli_module(capsys):
    from medseg.cli.main import main

    class Result:
        def __init__(self, code, out, err):
            self.code, self.out, self.err = code, out, err

    def _run(*args):
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 0
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return _run


def test_real_brats2015_import(tmp_path, shared_file):
    src = shared_file("brats2015_deepmedic")
    report = import_dataset(src, tmp_path / "brats", resolve_spec(preset="brats2015"), workers=2)
    assert report.cases == ["brats_2013_pat0003_1", "brats_2013_pat0004_1", "brats_2013_pat0005_1", "brats_2013_pat0006_1"]
    data = json.loads((tmp_path / "brats" / "dataset.json").read_text())
    assert data["channel_names"] == {"0": "FLAIR", "1": "T1c"} and data["numTraining"] == 4
    assert data["labels"]["whole tumor"] == [1, 2, 3, 4] and data["regions_class_order"] == [2, 1, 4]
    for case in report.cases:
        source = nib.load(str(src / case / "OTMultiClass.nii.gz"))
        for path in [*(tmp_path / "brats" / "imagesTr").glob(f"{case}_*.nii.gz"), tmp_path / "brats" / "labelsTr" / f"{case}.nii.gz"]:
            written = nib.load(str(path))
            assert written.shape == (240, 240, 155) and np.array_equal(written.affine, source.affine)
    label = np.asanyarray(nib.load(str(tmp_path / "brats" / "labelsTr" / f"{report.cases[0]}.nii.gz")).dataobj)
    assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1, 2, 3, 4}


def test_missing_parent_folders_of_the_destination_are_made(tmp_path):
    src = brats_like(tmp_path / "src")
    report = import_dataset(src, tmp_path / "data" / "nested" / "brats", plain_spec())
    assert (tmp_path / "data" / "nested" / "brats" / "dataset.json").is_file() and len(report.cases) == 2
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is a file, not a folder"):
        import_dataset(src, tmp_path / "file" / "brats", plain_spec())


# --- parallel folders (image/X.nii.gz + nodule_mask/X.nii.gz) ------------------------------------
def parallel_folders(root: Path, names=("p1_R_1", "p1_R_2", "p2_R_1"), slices=(2, 3, 5), channels=("image",)) -> Path:
    """LIDC-like parallel folders: thin CT crops (int16 HU) and int16 {0,1} masks with the same names."""
    for index, name in enumerate(names):
        image, _ = phantom((20, 18, slices[index % len(slices)]), "CT", seed=index, organ=False, tumor=False)
        label = np.zeros(image.shape, np.uint8)
        label[7:12, 6:10 + index, :] = 1  # a nodule on every slice: every LIDC mask is non-empty
        image[label > 0] = 30
        affine = np.diag([-0.7, -0.7, 2.5, 1.0])  # LPS, as most LIDC crops
        for channel in channels:
            save_nifti(image.astype(np.int16), affine, root / channel / f"{name}.nii.gz")
        save_nifti((label > 0).astype(np.int16), affine, root / "nodule_mask" / f"{name}.nii.gz")
    return root


def test_parallel_folders_link_matching_names_into_the_nnunet_layout(tmp_path):
    src = parallel_folders(tmp_path / "lidc")
    report = import_dataset(src, tmp_path / "out", resolve_spec(images=["CT=image"], labels="nodule_mask", label_names=["1=nodule"]))
    dest = tmp_path / "out"
    assert report.cases == ["p1_R_1", "p1_R_2", "p2_R_1"] and (report.linked, report.converted) == (6, 0)
    image = dest / "imagesTr" / "p1_R_2_0000.nii.gz"
    assert image.is_symlink() and image.resolve() == (src / "image" / "p1_R_2.nii.gz").resolve()
    assert (dest / "labelsTr" / "p1_R_2.nii.gz").resolve() == (src / "nodule_mask" / "p1_R_2.nii.gz").resolve()
    data = json.loads((dest / "dataset.json").read_text())
    assert data["channel_names"] == {"0": "CT"} and data["labels"] == {"background": 0, "nodule": 1} and data["numTraining"] == 3
    assert data["medseg_import"]["layout"] == "paired" and data["medseg_import"]["images"] == {"CT": "image"}
    assert "channels" not in data["medseg_import"], "case-folder patterns would make `medseg infer` look for case folders"
    description = load_dataset(dest)
    assert [case.case_id for case in description.cases] == report.cases and not description.channel_patterns
    assert description.modalities == ["CT"]


def test_parallel_folders_preset_and_several_channels(tmp_path):
    src = parallel_folders(tmp_path / "lidc")
    spec = resolve_spec(preset="lidc")
    assert (spec.layout, spec.channels, spec.label, spec.label_names, spec.regions) == (
        "paired", [("CT", "image")], "nodule_mask", {0: "background", 1: "nodule"}, {})
    import_dataset(src, tmp_path / "out", spec)
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["labels"] == {"background": 0, "nodule": 1}
    two = parallel_folders(tmp_path / "mr", channels=("t2", "adc"))
    report = import_dataset(two, tmp_path / "two", resolve_spec(images=["T2=t2", f"ADC={two / 'adc'}"], labels="nodule_mask"))
    assert sorted(p.name for p in (tmp_path / "two" / "imagesTr").iterdir())[:2] == ["p1_R_1_0000.nii.gz", "p1_R_1_0001.nii.gz"]
    assert (tmp_path / "two" / "imagesTr" / "p2_R_1_0001.nii.gz").resolve() == (two / "adc" / "p2_R_1.nii.gz").resolve()
    assert report.dataset_json["labels"] == {"background": 0, "label_1": 1}  # values found, no names given


def test_names_in_only_one_folder_are_refused_in_one_line(tmp_path):
    src = parallel_folders(tmp_path / "lidc")
    (src / "image" / "p2_R_1.nii.gz").rename(src / "image" / "p9_R_1.nii.gz")
    (src / "image" / "notes.txt").write_text("not an image")  # unreadable suffixes are not cases
    with pytest.raises(InputError) as caught:
        import_dataset(src, tmp_path / "out", resolve_spec(preset="lidc"))
    message = str(caught.value)
    assert "\n" not in message and "1 missing from image/ (p2_R_1)" in message and "1 missing from nodule_mask/ (p9_R_1)" in message
    assert not (tmp_path / "out").exists()
    # an image without a label is a test case when allowed; a label without an image never is
    with pytest.raises(InputError) as caught:
        import_dataset(src, tmp_path / "out", resolve_spec(preset="lidc", allow_unlabelled=True))
    assert "1 missing from image/ (p2_R_1)" in str(caught.value) and "nodule_mask/" not in str(caught.value)
    (src / "nodule_mask" / "p2_R_1.nii.gz").unlink()
    report = import_dataset(src, tmp_path / "out", resolve_spec(preset="lidc", allow_unlabelled=True))
    assert report.test_cases == ["p9_R_1"] and (tmp_path / "out" / "imagesTs" / "p9_R_1_0000.nii.gz").is_symlink()


@pytest.mark.parametrize("problem", ["shape", "grid", "duplicate", "no_folder"])
def test_parallel_folders_geometry_and_layout_refusals(tmp_path, problem):
    src = parallel_folders(tmp_path / "lidc")
    mask = src / "nodule_mask" / "p1_R_2.nii.gz"
    affine = np.diag([-0.7, -0.7, 2.5, 1.0])
    if problem == "shape":
        save_nifti(np.zeros((20, 18, 2), np.int16), affine, mask)
        expected = "shape (20, 18, 2) differs"
    elif problem == "grid":
        affine[2, 3] = 2.5  # one slice off
        save_nifti(np.zeros((20, 18, 3), np.int16), affine, mask)
        expected = "grid differs"
    elif problem == "duplicate":
        save_nifti(np.zeros((20, 18, 3), np.float32), affine, src / "image" / "p1_R_2.nii")
        expected = "same case name"
    else:
        shutil.rmtree(src / "nodule_mask")
        expected = "is not a folder (--labels"
    with pytest.raises(InputError, match=re.escape(expected)):
        import_dataset(src, tmp_path / "out", resolve_spec(preset="lidc"))
    assert not (tmp_path / "out").exists()


def test_parallel_folder_options_are_checked():
    with pytest.raises(ConfigError, match="expected NAME=DIR, e.g. --images CT=image"):
        resolve_spec(images=["image"], labels="nodule_mask")
    with pytest.raises(ConfigError, match="needs --labels"):
        resolve_spec(images=["CT=image"])
    with pytest.raises(ConfigError, match="needs --images"):
        resolve_spec(labels="nodule_mask")
    with pytest.raises(ConfigError, match="--channel, --label name files inside case folders"):
        resolve_spec(images=["CT=image"], labels="nodule_mask", channels=["CT=*img*"], label="*seg*")
    with pytest.raises(ConfigError, match="--mask"):
        resolve_spec(preset="lidc", mask="*brain*")
    assert resolve_spec(preset="lidc", mask="none").mask is None
    assert resolve_spec(preset="lidc", images=["CT=crops"]).channels == [("CT", "crops")]  # options override the preset


def test_real_lidc_parallel_folders_import(tmp_path, shared_file):
    src = shared_file("lidc_nodules")
    report = import_dataset(src, tmp_path / "lidc", resolve_spec(preset="lidc"), workers=2)
    assert len(report.cases) == 647 and (report.linked, report.converted) == (1294, 0)
    assert report.dataset_json["labels"] == {"background": 0, "nodule": 1}
    case = report.cases[0]
    written = nib.load(str(tmp_path / "lidc" / "imagesTr" / f"{case}_0000.nii.gz"))
    assert np.array_equal(written.affine, nib.load(str(src / "image" / f"{case}.nii.gz")).affine)

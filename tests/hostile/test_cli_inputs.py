"""Hostile non-volume inputs through the real `medseg` process: configs, checkpoints, archives, datasets,
evaluation folders, output paths and file names that look like rich markup.

Each case is made in the test and run in its own interpreter with stderr piped (as in a CI log). The
promise checked by :func:`tests.hostile.harness.assert_refused`: exit code 2, exactly one ``error:``
line that names the file, nothing left in the output folder, bounded peak memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.hostile import _builders as b
from tests.hostile.harness import assert_refused, run_medseg

TORCH_RSS_MB = 900.0  # commands that load a network import torch (~450 MB resident on its own)


def _plan(tmp: Path, *extra) -> list:
    return ["plan", b.tiny_dataset(tmp / "ds"), "-o", tmp / "out" / "plans.json", "-j", "1", *extra]


# --- configs ----------------------------------------------------------------------------------------


def config_random_bytes(tmp):
    config = b.random_bytes(tmp / "random.yaml")
    return b.Hostile(_plan(tmp, "--config", config), config, "not a text file", tmp / "out")


def _config_text_case(file_name: str, text: str, expected: str):
    """A config file whose YAML text is wrong in one way; `plan --config` must name the file and the fault."""
    def make_case(tmp):
        config = tmp / file_name
        config.write_text(text)
        return b.Hostile(_plan(tmp, "--config", config), config, expected, tmp / "out")
    make_case.__name__ = "config_" + Path(file_name).stem
    return make_case


# PyYAML's syntax report spans four lines; the CLI says where on one.
config_yaml_syntax_error = _config_text_case("yaml_syntax_error.yaml", "train:\n  lr: [0.1,\n  epochs: 3\n",
                                             "not valid YAML (line")
config_list_not_mapping = _config_text_case("list_not_mapping.yaml", "- train\n- infer\n", "must be a mapping")
config_unknown_section = _config_text_case("unknown_section.yaml", "trian:\n  lr: 0.1\n", "trian: unknown key")
config_unknown_key = _config_text_case("unknown_key.yaml", "train:\n  learning_rate: 0.1\n",
                                       "train.learning_rate: unknown key")
config_wrong_type = _config_text_case("wrong_type.yaml", "train:\n  epochs: many\n", "train.epochs")


def config_is_a_folder(tmp):
    folder = tmp / "configs"
    folder.mkdir()
    return b.Hostile(_plan(tmp, "--config", folder), folder, "is a folder", tmp / "out")


def set_bad_key(tmp):
    return b.Hostile(_plan(tmp, "--set", "plan.no_such_key=1"), "plan.no_such_key", "unknown key", tmp / "out")


def set_bad_value(tmp):
    return b.Hostile(_plan(tmp, "--set", "plan.target_spacing=[1,1"), "plan.target_spacing", "not valid YAML", tmp / "out")


# --- checkpoints (through `medseg infer`) -----------------------------------------------------------


def _infer(tmp: Path, model: Path, expected: str, **extra) -> b.Hostile:
    image = tmp / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((12, 10, 8), np.int16), np.eye(4)), image)
    return b.Hostile(["infer", model, image, "-o", tmp / "masks"], model, expected, tmp / "masks", TORCH_RSS_MB, **extra)


def checkpoint_random_bytes(tmp):
    return _infer(tmp, b.random_bytes(tmp / "model.pt"), "not a readable medseg checkpoint")


def checkpoint_runs_code(tmp):
    """A torch.save file whose pickle calls os.system: refused by weights_only, the command never runs."""
    marker = tmp / "PWNED"
    return _infer(tmp, b.code_running_pickle(tmp / "evil.pt", marker, torch_format=True), "posix.system", not_created=[marker])


def checkpoint_plain_pickle_runs_code(tmp):
    marker = tmp / "PWNED"
    return _infer(tmp, b.code_running_pickle(tmp / "evil_legacy.pt", marker, torch_format=False), "not a readable medseg checkpoint",
                  not_created=[marker])


def checkpoint_wrong_schema(tmp):
    return _infer(tmp, b.torch_save({"format_version": 2, "model": {}, "weights": [1, 2]}, tmp / "foreign.pt"), "not a valid checkpoint")


def checkpoint_labels_wrong_type(tmp):
    storage = b.valid_payload().to_storage()
    storage["labels"] = ["background", "liver", "tumor"]
    return _infer(tmp, b.torch_save(storage, tmp / "labels_list.pt"), "labels")


def checkpoint_format_1_config_wrong_type(tmp):
    """A format-1 checkpoint whose train section and plan configurations are lists: the upgrade path must not trip over them."""
    storage = b.valid_payload().to_storage()
    spec = dict(storage["model_spec"])
    spec["plan_configuration"] = {key: value for key, value in spec.pop("configuration").items() if key not in ("name", "spacing")}
    plan = dict(storage["plan"], configurations=["3d_fullres"])
    storage.update(format_version=1, model_spec=spec, plan=plan, config={"train": ["not", "a", "mapping"]})
    return _infer(tmp, b.torch_save(storage, tmp / "old_format.pt"), "not a valid checkpoint")


def checkpoint_truncated(tmp):
    good = b.torch_save(b.valid_payload().to_storage(), tmp / "good.pt")
    truncated = tmp / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return _infer(tmp, truncated, "truncated or corrupt")


def empty_run_folder(tmp):
    run = tmp / "run"
    run.mkdir()
    return _infer(tmp, run, "not a medseg run folder")


# --- archives (through `medseg data fetch RECIPE.yaml`) --------------------------------------------


def _fetch(tmp: Path, archive: Path, expected: str, kind: str = "tar", verified: bool = True) -> b.Hostile:
    dest = tmp / "datasets"
    return b.Hostile(["data", "fetch", b.recipe_for(archive, kind, verified), "--dest", dest], archive.name, expected, dest)


def archive_parent_member(tmp):
    archive = b.tar_archive(tmp / "dotdot.tar", {"Task99_Fake/dataset.json": b"{}", "Task99_Fake/../../escaped.txt": b"x"})
    return _fetch(tmp, archive, "path traversal")


def archive_absolute_member(tmp):
    archive = b.tar_archive(tmp / "absolute.tar", {"Task99_Fake/dataset.json": b"{}", str(tmp / "escaped_abs.txt"): b"x"})
    hostile = _fetch(tmp, archive, "absolute path")
    hostile.not_created.append(tmp / "escaped_abs.txt")
    return hostile


def archive_symlink_member(tmp):
    archive = b.tar_archive(tmp / "link.tar", {"Task99_Fake/dataset.json": b"{}"}, links={"Task99_Fake/imagesTr": "/etc"})
    return _fetch(tmp, archive, "symbolic link")


def archive_corrupt_zip(tmp):
    return _fetch(tmp, b.corrupt_zip(tmp / "corrupt.zip"), "not a readable zip archive", kind="zip")


def archive_corrupt_tar_unverified(tmp):
    """No checksum: the 'cannot be verified' warning is held back, and the one error line counts it."""
    return _fetch(tmp, b.random_bytes(tmp / "corrupt.tar"), "1 warning(s) before it not shown", verified=False)


# --- datasets (through `medseg plan`; `dataset check` lists problems, see below) -------------------


def _plan_dataset(tmp: Path, root: Path, named, expected: str) -> b.Hostile:
    return b.Hostile(["plan", root, "-o", tmp / "out" / "plans.json", "-j", "1"], named, expected, tmp / "out")


def dataset_without_dataset_json(tmp):
    root = b.tiny_dataset(tmp / "no_description")
    (root / "dataset.json").unlink()
    return _plan_dataset(tmp, root, root, "no dataset.json")


def dataset_json_not_json(tmp):
    root = b.tiny_dataset(tmp / "binary_description")
    b.random_bytes(root / "dataset.json", 300)
    return _plan_dataset(tmp, root, "dataset.json", "not valid JSON")


def dataset_labels_not_a_mapping(tmp):
    root = b.tiny_dataset(tmp / "labels_list")
    b.edit_dataset_json(root, labels=["background", "organ"])
    return _plan_dataset(tmp, root, "dataset.json", "'labels' must be a non-empty mapping")


def dataset_image_without_label(tmp):
    root = b.tiny_dataset(tmp / "unlabelled")
    (root / "labelsTr" / "case_001.nii.gz").unlink()
    return _plan_dataset(tmp, root, "case_001.nii.gz", "does not exist")


def dataset_wrong_channel_count(tmp):
    root = b.tiny_dataset(tmp / "channels")
    b.edit_dataset_json(root, modality={"0": "CT", "1": "PET"})
    return _plan_dataset(tmp, root, "case_000.nii.gz", "dataset.json declares 2")


def _with_undeclared_label_value(root: Path) -> Path:
    """One voxel of value 7 in the second case's label map; dataset.json declares 0, 1, 2 (`dataset check` finds it)."""
    path = root / "labelsTr" / "case_001.nii.gz"
    image = nib.load(path)
    array = np.asarray(image.dataobj).copy()
    array[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(array, image.affine, image.header), path)
    return path


def dataset_label_value_not_declared(tmp):
    label = _with_undeclared_label_value(b.tiny_dataset(tmp / "undeclared"))
    return _plan_dataset(tmp, label.parents[1], label, "label values [7] are not declared in dataset.json (declared: [0, 1, 2])")


def dataset_label_value_not_declared_train(tmp):
    """`medseg train` plans a raw dataset first: the same refusal, before any plan, cache or run folder is written."""
    label = _with_undeclared_label_value(b.tiny_dataset(tmp / "undeclared"))
    args = ["train", label.parents[1], "-o", tmp / "run", "--set", "preprocess.workers=1", "--set", f"work_dir={tmp / 'out'}"]
    return b.Hostile(args, label, "label values [7] are not declared in dataset.json", tmp / "out", rss_limit_mb=TORCH_RSS_MB,
                     not_created=[tmp / "run"])


# --- evaluation folders (through `medseg report`) --------------------------------------------------


def _report(tmp: Path, cases_csv, expected: str) -> b.Hostile:
    folder = b.eval_folder(tmp / "eval", cases_csv)
    return b.Hostile(["report", folder, "-o", tmp / "out" / "report.html"], "cases.csv", expected, tmp / "out")


def report_missing_columns(tmp):
    return _report(tmp, "case,volume\ncase_a,1.0\n", "lacks column(s) label")


def report_empty_cases(tmp):
    return _report(tmp, "", "is empty")


def report_binary_cases(tmp):
    return _report(tmp, b.random_bytes(tmp / "noise.bin", 500).read_bytes(), "not a text CSV")


def report_text_in_a_number_column(tmp):
    return _report(tmp, "case,label,label_index,dice,tolerance_mm\ncase_a,liver,1,high,1\n", "column 'dice' holds 'high'")


# --- output paths (through `medseg convert`) -------------------------------------------------------


def _scan(tmp: Path) -> Path:
    path = tmp / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4), np.eye(4)), path)
    return path


def output_is_existing_folder(tmp):
    out = tmp / "out"
    out.mkdir()
    return b.Hostile(["convert", _scan(tmp), out], out, "is a folder", out)


def output_folder_missing(tmp):
    return b.Hostile(["convert", _scan(tmp), tmp / "missing" / "scan.nii.gz"], "missing", "does not exist", tmp / "missing")


def output_parent_is_a_file(tmp):
    blocker = tmp / "blocker"
    blocker.write_text("a file, not a folder")
    return b.Hostile(["convert", _scan(tmp), blocker / "scan.nii.gz"], "blocker", "is a file, not a folder")


def output_folder_unwritable(tmp):
    if os.geteuid() == 0:  # root writes anywhere but sysfs
        if not Path("/sys").is_dir():
            pytest.skip("running as root without /sys: no folder is unwritable")
        return b.Hostile(["convert", _scan(tmp), "/sys/scan.nii.gz"], "/sys/scan.nii.gz", "ermission denied")
    locked = tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return b.Hostile(["convert", _scan(tmp), locked / "scan.nii.gz"], "locked", "not writable", locked)


# --- file names that look like rich markup ---------------------------------------------------------


def markup_closing_tag_name(tmp):
    return b.Hostile(["info", tmp / "[/red]x.nii.gz"], "[/red]x.nii.gz", "does not exist")


def markup_style_name(tmp):
    source = tmp / "[red]scan.nii.gz"
    source.write_bytes(b"not a gzip stream")
    (tmp / "out").mkdir()
    return b.Hostile(["convert", source, tmp / "out" / "x.nii.gz"], "[red]scan.nii.gz", "NIfTI", tmp / "out")


def markup_in_config_name(tmp):
    config = tmp / "[bold]config.yaml"
    config.write_text("train: [1, 2]\n")
    return b.Hostile(_plan(tmp, "--config", config), "[bold]config.yaml", "train", tmp / "out")


CASES = [
    config_random_bytes, config_yaml_syntax_error, config_list_not_mapping, config_unknown_section, config_unknown_key,
    config_wrong_type, config_is_a_folder, set_bad_key, set_bad_value,
    checkpoint_random_bytes, checkpoint_runs_code, checkpoint_plain_pickle_runs_code, checkpoint_wrong_schema,
    checkpoint_labels_wrong_type, checkpoint_format_1_config_wrong_type, checkpoint_truncated, empty_run_folder,
    archive_parent_member, archive_absolute_member, archive_symlink_member, archive_corrupt_zip, archive_corrupt_tar_unverified,
    dataset_without_dataset_json, dataset_json_not_json, dataset_labels_not_a_mapping, dataset_image_without_label,
    dataset_wrong_channel_count, dataset_label_value_not_declared, dataset_label_value_not_declared_train,
    report_missing_columns, report_empty_cases, report_binary_cases, report_text_in_a_number_column,
    output_is_existing_folder, output_folder_missing, output_parent_is_a_file, output_folder_unwritable,
    markup_closing_tag_name, markup_style_name, markup_in_config_name,
]  # fmt: skip


@pytest.mark.parametrize("make_case", CASES, ids=[case.__name__ for case in CASES])
def test_hostile_input_is_refused_in_one_line(tmp_path, make_case):
    case = make_case(tmp_path)
    outcome = run_medseg(case.args, cwd=tmp_path)
    assert_refused(outcome, case.named, case.expected, out_dir=case.out_dir, rss_limit_mb=case.rss_limit_mb)
    assert "Traceback" not in outcome.stderr
    for path in case.not_created:
        assert not path.exists(), f"{path} was written: the hostile input ran"


# --- dataset check: every problem listed, identifiers intact when piped ------------------------------


def test_dataset_check_lists_every_problem_with_long_ids_on_one_line(tmp_path):
    """Piped at 40 columns, each case id and file name of the problem table stays whole on its line."""
    from tests.data._builders import save_nifti

    root = b.tiny_dataset(tmp_path / "hippocampus", cases=3)
    long_ids = [f"hippocampus_{index:03d}_left_anterior_segment" for index in range(3)]
    for folder in ("imagesTr", "labelsTr"):
        for index, case_id in enumerate(long_ids):
            (root / folder / f"case_{index:03d}.nii.gz").rename(root / folder / f"{case_id}.nii.gz")
    b.edit_dataset_json(root, training=[{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in long_ids])
    (root / "labelsTr" / f"{long_ids[0]}.nii.gz").unlink()
    label = nib.load(root / "labelsTr" / f"{long_ids[1]}.nii.gz")
    save_nifti(np.asarray(label.dataobj)[:, :, :-1], label.affine, root / "labelsTr" / f"{long_ids[1]}.nii.gz")
    outcome = run_medseg(["dataset", "check", root], cwd=tmp_path, env={"COLUMNS": "40"})
    assert outcome.code == 1, outcome.stderr
    assert outcome.stderr.strip() == ""
    rows = {case_id: [line for line in outcome.stdout.splitlines() if case_id in line] for case_id in long_ids[:2]}
    assert len(rows[long_ids[0]]) == 1 and "missing_label" in rows[long_ids[0]][0]
    assert len(rows[long_ids[1]]) == 1 and "shape_mismatch" in rows[long_ids[1]][0] and f"{long_ids[1]}.nii.gz" in rows[long_ids[1]][0]
    assert long_ids[2] not in outcome.stdout  # the good case has no problem


def test_dataset_check_prints_markup_like_case_ids_literally(tmp_path):
    root = b.tiny_dataset(tmp_path / "markup", cases=1)
    for folder in ("imagesTr", "labelsTr"):
        (root / folder / "case_000.nii.gz").rename(root / folder / "[red]case.nii.gz")
    b.edit_dataset_json(root, training=[{"image": "./imagesTr/[red]case.nii.gz", "label": "./labelsTr/[red]case.nii.gz"}])
    (root / "labelsTr" / "[red]case.nii.gz").unlink()
    outcome = run_medseg(["dataset", "check", root, "--workers", "1"], cwd=tmp_path)
    assert outcome.code == 1 and "Traceback" not in outcome.stderr
    assert "[red]case" in outcome.stdout and "missing_label" in outcome.stdout


# --- a failed infer / train with stderr piped: one line; -v shows the rest ---------------------------


@pytest.fixture(scope="module")
def model_and_cases(tmp_path_factory) -> tuple[Path, Path]:
    """A real (untrained) checkpoint and a folder of two scans, one of them corrupt."""
    root = tmp_path_factory.mktemp("hostile_infer")
    model = b.torch_save(b.valid_payload().to_storage(), root / "model.pt")
    cases = root / "cases"
    cases.mkdir()
    image = np.random.default_rng(b.SEED).normal(0, 100, (24, 20, 12)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.diag([2.0, 2.0, 3.0, 1.0])), cases / "good.nii.gz")
    (cases / "corrupt.nii.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(40))
    return model, cases


def test_failed_infer_prints_one_line_and_verbose_prints_more(tmp_path, model_and_cases):
    model, cases = model_and_cases
    quiet = run_medseg(["infer", model, cases, "-o", tmp_path / "masks", "--device", "cpu"], cwd=tmp_path)
    assert quiet.code == 2, quiet.stderr
    assert len(quiet.error_lines) == 1, quiet.stderr
    assert quiet.error_lines[0].startswith("error: 1 of 2 case(s) failed (corrupt") and "━" not in quiet.stderr
    assert (tmp_path / "masks" / "good.nii.gz").is_file()  # the other case was still written
    verbose = run_medseg(["-v", "infer", model, cases, "-o", tmp_path / "masks_v", "--device", "cpu"], cwd=tmp_path)
    assert verbose.code == 2 and len(verbose.error_lines) > 1
    assert any(line.startswith("info: loaded 1 network") for line in verbose.error_lines)
    assert verbose.error_lines[-1] == quiet.error_lines[0].replace("masks", "masks_v")


@pytest.mark.slow  # two trainings that plan and preprocess a dataset (~15 s each on 2 cores)
def test_failed_train_prints_one_line_and_verbose_prints_more(tmp_path):
    """`train --resume` onto a damaged checkpoint fails after planning, preprocessing and INFO logs."""
    root = b.tiny_dataset(tmp_path / "dataset", cases=3)
    damaged = b.random_bytes(tmp_path / "run" / "fold_0" / "checkpoint_last.pt") if (tmp_path / "run" / "fold_0").mkdir(parents=True) is None else None
    args = ["train", root, "-o", tmp_path / "run", "--resume", "--fold", "0", "--set", "preprocess.workers=1", "--set", f"work_dir={tmp_path / 'work'}",
            "--set", "train.num_folds=2", "--set", "train.patch_size=[16,16,8]", "--set", "model.base_features=4"]
    quiet = run_medseg(args, cwd=tmp_path)
    assert_refused(quiet, damaged, "not a readable medseg checkpoint", rss_limit_mb=TORCH_RSS_MB)
    verbose = run_medseg(["-v", *args], cwd=tmp_path)
    assert verbose.code == 2 and len(verbose.error_lines) > 1, verbose.stderr
    assert any(line.startswith("info: training fold 0") for line in verbose.error_lines)
    assert verbose.error_lines[-1] == quiet.error_lines[0]


def test_warnings_are_printed_when_the_command_succeeds(tmp_path):
    """Held back while it runs (the one-line promise on failure), shown once a command has succeeded."""
    archive = b.tar_archive(tmp_path / "Task99_Fake.tar", {"Task99_Fake/dataset.json": b'{"name": "Fake"}', "Task99_Fake/imagesTr/a.nii": b"x"})
    outcome = run_medseg(["data", "fetch", b.recipe_for(archive, verified=False), "--dest", tmp_path / "datasets"], cwd=tmp_path)
    assert outcome.code == 0, outcome.stderr
    assert (tmp_path / "datasets" / "Task99_Fake" / "dataset.json").is_file()
    assert len(outcome.error_lines) == 1 and outcome.error_lines[0].startswith("warning: Task99_Fake: no checksum"), outcome.stderr

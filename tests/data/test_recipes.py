"""Dataset recipes offline: a fake MSD archive served from loopback and file://, resume, checksums, unsafe archives."""

import gzip
import hashlib
import io
import json
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from medseg.data.archive import check_archive, safe_extract
from medseg.data.download import download, part_path
from medseg.data.recipes import FETCH_DIR, Recipe, fetch, list_recipes, load_recipe, read_recipe, recipes_dir
from medseg.errors import ConfigError, InputError

# --- fixtures: a loopback HTTP server with Range support, fake archives --------------------------


class _State:
    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, str | None]] = []
        self.honour_range = True
        self.drop_first_after: int | None = None  # send only this many bytes on the first request


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802 (http.server naming)
        state: _State = self.server.state  # type: ignore[attr-defined]
        header = self.headers.get("Range")
        state.requests.append((self.path, header))
        path = state.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", header or "")
        if match and state.honour_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.drop_first_after is not None and len(state.requests) == 1:
            self.wfile.write(body[: state.drop_first_after])
            return  # HTTP/1.0: the connection closes early, as a dropped download would
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = _State(root)  # type: ignore[attr-defined]
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _nifti_bytes(shape=(6, 5, 4), value=1, dtype=np.int16) -> bytes:
    image = nib.Nifti1Image(np.full(shape, value, dtype), np.diag([0.8, 0.8, 2.5, 1.0]))
    return image.to_bytes()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _fake_msd_tar(path: Path, extra=None) -> Path:
    """Task99_Fake/ with dataset.json, 2 cases (images larger than one 1 MiB read, for resume tests) and a ._ junk file."""
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("Task99_Fake")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        description = {"name": "Fake", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "tumor"}, "numTraining": 2,
                       "training": [{"image": f"./imagesTr/fake_{i}.nii.gz", "label": f"./labelsTr/fake_{i}.nii.gz"} for i in (1, 2)], "test": []}
        _add(tar, "Task99_Fake/dataset.json", json.dumps(description).encode())
        for i in (1, 2):
            _add(tar, f"Task99_Fake/imagesTr/fake_{i}.nii", _nifti_bytes((64, 64, 80), i))
            _add(tar, f"Task99_Fake/labelsTr/fake_{i}.nii", _nifti_bytes((64, 64, 80), 1, np.uint8))
        _add(tar, "Task99_Fake/imagesTr/._fake_1.nii", b"\x00\x05\x16\x07 AppleDouble junk")
        for kind, name, data in extra or ():
            if kind == "file":
                _add(tar, name, data)
            else:
                info = tarfile.TarInfo(name)
                info.type = kind
                info.linkname = data
                tar.addfile(info)
    return path


def _md5(path: Path) -> str:
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


def _recipe(url: str, checksum: str | None, **update) -> Recipe:
    data = {
        "name": "Task99_Fake", "description": "test", "homepage": "http://example.invalid", "license": "CC0", "citation": "none",
        "modality": {"0": "CT"}, "labels": {"0": "background", "1": "tumor"}, "cases": "2 train", "layout": "msd",
        "conversion": "none", "dataset_folder": "Task99_Fake",
        "sources": [{"url": url, "checksum": checksum, "unverified_reason": None if checksum else "test", "archive": "tar", "filename": "Task99_Fake.tar"}],
    }
    data.update(update)
    return Recipe.model_validate(data)


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _assert_msd_dataset(dest: Path) -> None:
    dataset = dest / "Task99_Fake"
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 2
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == ["fake_1.nii", "fake_2.nii"]  # ._ junk skipped
    assert np.asarray(nib.load(dataset / "imagesTr/fake_2.nii").dataobj)[0, 0, 0] == 2
    assert not (dest / FETCH_DIR).exists()  # archive removed, no .part left


# --- success paths ------------------------------------------------------------------------------


def test_fetch_over_http_verifies_and_lays_out(server, tmp_path):
    archive = _fake_msd_tar(server.state.root / "Task99_Fake.tar")
    dataset = fetch(_recipe(f"{server.url}/Task99_Fake.tar", _md5(archive)), tmp_path / "dest", progress=False)
    assert dataset == tmp_path / "dest" / "Task99_Fake"
    _assert_msd_dataset(tmp_path / "dest")
    assert server.state.requests == [("/Task99_Fake.tar", None)]
    # A second run finds dataset.json and does not download again.
    fetch(_recipe(f"{server.url}/Task99_Fake.tar", _md5(archive)), tmp_path / "dest", progress=False)
    assert len(server.state.requests) == 1


def test_fetch_from_file_url_override(tmp_path):
    archive = _fake_msd_tar(tmp_path / "Task99_Fake.tar")
    recipe = _recipe("https://unreachable.invalid/Task99_Fake.tar", _md5(archive))
    fetch(recipe, tmp_path / "dest", url_override=archive.as_uri(), progress=False)
    _assert_msd_dataset(tmp_path / "dest")


def test_partial_download_is_resumed_with_a_range_request(server, tmp_path):
    archive = _fake_msd_tar(server.state.root / "Task99_Fake.tar")
    dest = tmp_path / "dest"
    (dest / FETCH_DIR).mkdir(parents=True)
    already = archive.stat().st_size // 3
    part_path(dest / FETCH_DIR / "Task99_Fake.tar").write_bytes(archive.read_bytes()[:already])
    fetch(_recipe(f"{server.url}/Task99_Fake.tar", _md5(archive)), dest, progress=False)
    assert server.state.requests == [("/Task99_Fake.tar", f"bytes={already}-")]
    _assert_msd_dataset(dest)


def test_partial_file_url_download_is_resumed(tmp_path):
    archive = _fake_msd_tar(tmp_path / "Task99_Fake.tar")
    target = tmp_path / "out" / "copy.tar"
    target.parent.mkdir()
    part_path(target).write_bytes(archive.read_bytes()[:1000])
    download(archive.as_uri(), target, _md5(archive))
    assert target.read_bytes() == archive.read_bytes() and not part_path(target).exists()


def test_dropped_connection_resumes_where_it_stopped(server, tmp_path):
    archive = _fake_msd_tar(server.state.root / "Task99_Fake.tar")
    server.state.drop_first_after = 300_000
    target = tmp_path / "a.tar"
    download(f"{server.url}/Task99_Fake.tar", target, _md5(archive), retry_wait_s=0)
    assert target.read_bytes() == archive.read_bytes()
    assert [r for _, r in server.state.requests] == [None, "bytes=300000-"]


def test_server_without_range_support_restarts_cleanly(server, tmp_path):
    archive = _fake_msd_tar(server.state.root / "Task99_Fake.tar")
    server.state.honour_range = False
    target = tmp_path / "a.tar"
    part_path(target).write_bytes(b"garbage that must not survive")
    download(f"{server.url}/Task99_Fake.tar", target, _md5(archive), retry_wait_s=0)
    assert target.read_bytes() == archive.read_bytes()


# --- refusals -----------------------------------------------------------------------------------


def test_bad_checksum_is_refused_and_nothing_is_left(server, tmp_path):
    _fake_msd_tar(server.state.root / "Task99_Fake.tar")
    dest = tmp_path / "dest"
    with pytest.raises(InputError, match="checksum mismatch"):
        fetch(_recipe(f"{server.url}/Task99_Fake.tar", "md5:" + "0" * 32), dest, progress=False)
    assert _tree(dest) == []


def test_wrong_size_is_refused(tmp_path):
    archive = _fake_msd_tar(tmp_path / "Task99_Fake.tar")
    with pytest.raises(InputError, match="size mismatch"):
        download(archive.as_uri(), tmp_path / "x.tar", _md5(archive), size_bytes=123)
    assert not (tmp_path / "x.tar").exists() and not part_path(tmp_path / "x.tar").exists()


def test_http_404_is_a_clear_error(server, tmp_path):
    with pytest.raises(InputError, match="HTTP 404"):
        download(f"{server.url}/missing.tar", tmp_path / "x.tar", None, retry_wait_s=0)


@pytest.mark.parametrize(
    "extra,message",
    [
        ([("file", "../evil", b"escaped")], r"\.\."),
        ([("file", "Task99_Fake/../../evil", b"escaped")], r"\.\."),
        ([("file", "/tmp/medseg_absolute_evil", b"escaped")], "absolute"),
        ([(tarfile.SYMTYPE, "Task99_Fake/link", "/etc/passwd")], "symbolic link"),
        ([(tarfile.LNKTYPE, "Task99_Fake/hard", "Task99_Fake/dataset.json")], "hard link"),
        ([(tarfile.CHRTYPE, "Task99_Fake/dev", "")], "device"),
        ([(tarfile.FIFOTYPE, "Task99_Fake/fifo", "")], "device, FIFO"),
    ],
)
def test_unsafe_tar_members_are_refused_before_anything_is_written(tmp_path, extra, message):
    # The unsafe member comes after good ones, and the checksum matches: only the safety check can stop it.
    archive = _fake_msd_tar(tmp_path / "Task99_Fake.tar", extra=extra)
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(InputError, match=message):
        fetch(_recipe("https://unreachable.invalid/x.tar", _md5(archive)), dest, url_override=archive.as_uri(), keep_archive=True, progress=False)
    assert _tree(dest) == [FETCH_DIR, f"{FETCH_DIR}/Task99_Fake.tar"]  # the verified archive only; nothing extracted
    assert not (tmp_path / "deep" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not Path("/tmp/medseg_absolute_evil").exists()


def _zip(path: Path, members) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            archive.writestr(info, data)
    return path


@pytest.mark.parametrize(
    "name,mode,message",
    [("../evil", None, r"\.\."), ("/abs/evil", None, "absolute"), ("C:/evil", None, "absolute"),
     ("ok\\..\\..\\evil", None, r"\.\."), ("link", 0o120777, "symbolic link")],
)
def test_unsafe_zip_members_are_refused(tmp_path, name, mode, message):
    archive = _zip(tmp_path / "bad.zip", [("good/a.txt", b"fine", 0o100644), (name, b"x", mode)])
    with pytest.raises(InputError, match=message):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil").exists()


def test_safe_extract_refuses_to_overwrite(tmp_path):
    archive = _zip(tmp_path / "ok.zip", [("top/a.txt", b"fine", 0o100644), ("__MACOSX/top/._a.txt", b"junk", None)])
    assert [m.name for m in check_archive(archive)] == ["top/a.txt", "__MACOSX/top/._a.txt"]
    created = safe_extract(archive, tmp_path / "out")
    assert created == [tmp_path / "out" / "top"] and (tmp_path / "out/top/a.txt").read_bytes() == b"fine"
    with pytest.raises(InputError, match="already exists"):
        safe_extract(archive, tmp_path / "out")


# --- KiTS23 (repository zip + per-case images) ---------------------------------------------------


def _kits_setup(server, shapes):
    with zipfile.ZipFile(server.state.root / "kits23-main.zip", "w") as archive:
        archive.writestr("kits23-main/README.md", "fake kits23 repository")
        for number in (0, 3):
            archive.writestr(f"kits23-main/dataset/case_{number:05d}/segmentation.nii.gz", gzip.compress(_nifti_bytes((6, 5, 4), 2, np.uint8)))
    for number, shape in zip((0, 3), shapes):
        (server.state.root / f"master_{number:05d}.nii.gz").write_bytes(gzip.compress(_nifti_bytes(shape, -100)))
    recipe = load_recipe("KiTS23")
    return recipe.model_copy(update={
        "sources": [recipe.sources[0].model_copy(update={"url": f"{server.url}/kits23-main.zip"})],
        "per_case": recipe.per_case.model_copy(update={"url_template": f"{server.url}/master_{{case_number}}.nii.gz"}),
    })


def test_kits23_recipe_converts_to_msd_layout(server, tmp_path):
    recipe = _kits_setup(server, [(6, 5, 4), (6, 5, 4)])
    dataset = fetch(recipe, tmp_path / "dest", progress=False)
    description = json.loads((dataset / "dataset.json").read_text())
    assert description["labels"] == {"0": "background", "1": "kidney", "2": "tumor", "3": "cyst"}
    assert [entry["image"] for entry in description["training"]] == ["./imagesTr/case_00000.nii.gz", "./imagesTr/case_00003.nii.gz"]
    assert all((dataset / e["label"]).is_file() and (dataset / e["image"]).is_file() for e in description["training"])
    assert not (tmp_path / "dest" / FETCH_DIR / "KiTS23-repository").exists()


def test_kits23_grid_mismatch_is_refused(server, tmp_path):
    recipe = _kits_setup(server, [(6, 5, 4), (7, 5, 4)])
    with pytest.raises(InputError, match="does not match its segmentation"):
        fetch(recipe, tmp_path / "dest", max_cases=2, progress=False)
    assert not (tmp_path / "dest" / "KiTS23" / "dataset.json").exists()


# --- the shipped recipes ------------------------------------------------------------------------


def test_every_shipped_recipe_parses_and_is_verified_or_explains_why():
    recipes = list_recipes()
    assert len(recipes) == len(list(recipes_dir().glob("*.yaml")))
    names = {r.name for r in recipes}
    assert {"Task01_BrainTumour", "Task03_Liver", "Task06_Lung", "Task07_Pancreas", "Task10_Colon", "KiTS23"} <= names
    for recipe in recipes:
        for source in recipe.sources:
            assert source.url.startswith("https://")
            assert source.checksum or len(source.unverified_reason or "") > 20, recipe.name
        if recipe.per_case:
            assert len(recipe.per_case.unverified_reason) > 20


def test_msd_recipes_use_monais_urls_and_md5s():
    from monai.apps.datasets import DecathlonDataset

    for recipe in list_recipes():
        if recipe.layout == "msd":
            assert recipe.sources[0].url == DecathlonDataset.resource[recipe.name]
            assert recipe.sources[0].checksum == "md5:" + DecathlonDataset.md5[recipe.name]


def test_unknown_recipe_lists_valid_names():
    with pytest.raises(ConfigError, match="valid names: .*Task03_Liver"):
        load_recipe("Task42_Nothing")
    assert load_recipe("liver").name == "Task03_Liver"


def test_recipe_without_checksum_or_reason_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    data = _recipe("https://example.invalid/x.tar", "md5:" + "1" * 32).model_dump()
    data["sources"][0]["checksum"] = None
    path.write_text(json.dumps(data))  # JSON is YAML
    with pytest.raises(ConfigError, match="unverified_reason"):
        read_recipe(path)


def test_cli_list_and_fetch(tmp_path):
    from medseg.cli import data_cmds

    app = typer.Typer()
    app.callback()(lambda: None)
    data_cmds.register(app)
    runner = CliRunner()
    listing = runner.invoke(app, ["data", "list"], terminal_width=200)
    assert listing.exit_code == 0 and "Task03_Liver" in listing.output and "KiTS23" in listing.output
    archive = _fake_msd_tar(tmp_path / "Task99_Fake.tar")
    recipe_file = tmp_path / "fake.yaml"
    recipe_file.write_text(json.dumps(_recipe("https://unreachable.invalid/x.tar", _md5(archive)).model_dump()))
    result = runner.invoke(app, ["data", "fetch", str(recipe_file), "--dest", str(tmp_path / "dest"), "--url-override", archive.as_uri()])
    assert result.exit_code == 0, result.output
    _assert_msd_dataset(tmp_path / "dest")


def test_kits23_partial_fetch_can_be_extended(server, tmp_path):
    recipe = _kits_setup(server, [(6, 5, 4), (6, 5, 4)])
    dataset = fetch(recipe, tmp_path / "dest", max_cases=1, progress=False)
    first = json.loads((dataset / "dataset.json").read_text())
    assert first["numTraining"] == 1 and "medseg_note" in first
    fetch(recipe, tmp_path / "dest", progress=False)
    second = json.loads((dataset / "dataset.json").read_text())
    assert second["numTraining"] == 2 and "medseg_note" not in second
    image_requests = [path for path, _ in server.state.requests if path.startswith("/master_")]
    assert image_requests == ["/master_00000.nii.gz", "/master_00003.nii.gz"]  # case 0 was not downloaded twice


def test_complete_part_file_is_verified_without_downloading_again(server, tmp_path):
    archive = _fake_msd_tar(server.state.root / "Task99_Fake.tar")
    target = tmp_path / "a.tar"
    part_path(target).write_bytes(archive.read_bytes())
    download(f"{server.url}/Task99_Fake.tar", target, _md5(archive), retry_wait_s=0)
    assert target.read_bytes() == archive.read_bytes()
    assert server.state.requests == [("/Task99_Fake.tar", f"bytes={archive.stat().st_size}-")]  # answered 416

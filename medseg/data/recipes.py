"""Public tumor datasets as recipes: where to download them, how to verify them, how to lay them out.

A recipe is a YAML file in ``data_recipes/`` validated by :class:`Recipe`. ``fetch`` downloads its
sources (resumable, checksum-verified where a checksum exists), extracts archives safely, and
leaves one MSD-style raw dataset folder (``imagesTr``, ``labelsTr``, ``dataset.json``) under the
destination, which is what ``medseg dataset check`` / ``plan`` / ``preprocess`` read.

Two layouts are supported: ``msd`` (a Medical Segmentation Decathlon tarball, already in the raw
layout) and ``kits23`` (the KiTS23 GitHub repository holds the label maps; each case's CT is a
separate download, for which no checksums are published).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from medseg.config import Section
from medseg.errors import ConfigError, InputError, brief
from medseg.io.atomic import atomic_path

log = logging.getLogger(__name__)

FETCH_DIR = ".medseg-fetch"  # downloads and staging, beside the datasets under --dest


class Source(Section):
    """One file to download."""

    url: str
    checksum: str | None = Field(None, description="md5:<hex> or sha256:<hex> of the downloaded file")
    unverified_reason: str | None = Field(None, description="required when there is no checksum: why, said plainly")
    checksum_source: str | None = Field(None, description="where the checksum comes from")
    size_bytes: int | None = Field(None, gt=0, description="exact size; checked when given")
    approx_size_gb: float | None = Field(None, gt=0, description="approximate, for the free-space warning only")
    archive: Literal["tar", "tar.gz", "zip", "none"] = "tar"
    filename: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        if urlparse(url).scheme not in ("http", "https", "file"):
            raise ValueError(f"'{url}' must be an https://, http:// or file:// URL")
        return url

    @field_validator("checksum")
    @classmethod
    def _checksum(cls, checksum: str | None) -> str | None:
        from medseg.data.download import CHECKSUM_PATTERN

        if checksum is not None and not CHECKSUM_PATTERN.match(checksum):
            raise ValueError("checksum must look like md5:<32 hex> or sha256:<64 hex>")
        return checksum

    @model_validator(mode="after")
    def _verified_or_explained(self) -> Source:
        if not self.checksum and not (self.unverified_reason or "").strip():
            raise ValueError("a source needs a checksum, or an unverified_reason saying why there is none")
        return self

    @property
    def file_name(self) -> str:
        return self.filename or Path(urlparse(self.url).path).name or "download"


class PerCase(Section):
    """Files downloaded one per case (KiTS23 CT images), named from a URL template."""

    url_template: str = Field(..., description="URL with {case_number}, replaced by the zero-padded case number")
    case_digits: int = Field(5, ge=1, le=8)
    unverified_reason: str
    cases_from: str = Field(..., description="how the case list is found (documentation)")

    @field_validator("url_template")
    @classmethod
    def _template(cls, template: str) -> str:
        if template.count("{case_number}") != 1 or urlparse(template).scheme not in ("http", "https", "file"):
            raise ValueError("url_template must be an http(s)/file URL containing {case_number} exactly once")
        return template

    def url(self, case_number: int) -> str:
        return self.url_template.replace("{case_number}", f"{case_number:0{self.case_digits}d}")


class Recipe(Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_\-]+$")
    aliases: list[str] = []
    description: str
    homepage: str
    license: str
    citation: str
    modality: dict[str, str]
    labels: dict[str, str]
    cases: str = Field(..., description="how many training/test cases the full dataset has")
    layout: Literal["msd", "kits23"]
    conversion: str = Field(..., description="what fetch does to reach the MSD raw layout")
    dataset_folder: str = Field(..., pattern=r"^[A-Za-z0-9_\-]+$")
    sources: list[Source] = Field(..., min_length=1)
    per_case: PerCase | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _layout_needs(self) -> Recipe:
        if self.layout == "kits23" and (self.per_case is None or self.sources[0].archive != "zip"):
            raise ValueError("layout kits23 needs a zip source (the repository) and a per_case section")
        if self.layout == "msd" and (len(self.sources) != 1 or self.sources[0].archive == "none"):
            raise ValueError("layout msd needs exactly one archive source")
        return self

    @property
    def verified(self) -> str:
        """One line for tables: what is checked, honestly."""
        parts = [s.checksum.split(":")[0] if s.checksum else "unverified" for s in self.sources]
        if self.per_case:
            parts.append("per-case files unverified")
        return ", ".join(parts)


# --- finding recipes ---------------------------------------------------------------------------
def packaged_folder(package: str) -> Path:
    """The folder of a data-only package shipped with medseg (editable installs map it to the repository;
    a source checkout used through PYTHONPATH, uninstalled, finds it at the repository's top)."""
    from importlib.resources import files

    try:
        return Path(str(files(package)))
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parents[2] / package.removeprefix("medseg.")
        if checkout.is_dir():
            return checkout
        raise



def recipes_dir() -> Path:
    """``$MEDSEG_RECIPES``, else the recipes shipped with medseg (``data_recipes/`` of the repository,
    installed as the package ``medseg.data_recipes``)."""
    override = os.environ.get("MEDSEG_RECIPES")
    return Path(override) if override else packaged_folder("medseg.data_recipes")


def read_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read recipe ({brief(error)})") from error
    try:
        return Recipe.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ConfigError(f"{path}: {where}: {first['msg']}") from error


def list_recipes(folder: str | Path | None = None) -> list[Recipe]:
    folder = Path(folder) if folder else recipes_dir()
    if not folder.is_dir():
        raise ConfigError(f"recipe folder {folder} not found (set MEDSEG_RECIPES to the data_recipes folder)")
    return [read_recipe(path) for path in sorted(folder.glob("*.yaml"))]


def load_recipe(name: str, folder: str | Path | None = None) -> Recipe:
    """A recipe by name or alias (case-insensitive), or by the path of a recipe YAML file."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return read_recipe(name)
    recipes = list_recipes(folder)
    wanted = name.lower()
    for recipe in recipes:
        if wanted == recipe.name.lower() or wanted in (alias.lower() for alias in recipe.aliases):
            return recipe
    raise ConfigError(f"unknown dataset recipe '{name}'; valid names: {', '.join(r.name for r in recipes)}")


# --- fetching ----------------------------------------------------------------------------------


def _progress(progress: bool):
    if not progress:
        return None
    from medseg.data.download import make_progress

    display = make_progress()
    display.start()
    return display


def _warn_space(recipe: Recipe, dest: Path) -> None:
    need = sum(2 * (s.approx_size_gb or 0) for s in recipe.sources)  # archive + extracted copy
    free = shutil.disk_usage(dest).free / 1e9
    if need and free < need:
        log.warning("%s needs roughly %.0f GB (archive + extracted) but %s has %.0f GB free", recipe.name, need, dest, free)


def fetch(recipe: Recipe | str, dest: str | Path, url_override: str | None = None, keep_archive: bool = False,
          max_cases: int | None = None, progress: bool = True) -> Path:
    """Download, verify, safely extract and lay out ``recipe`` under ``dest``; return the dataset folder.

    ``url_override`` replaces the URL of the first source (a mirror or a local ``file://`` copy);
    the recipe's checksum still applies. ``max_cases`` limits per-case downloads (KiTS23), for a
    quick look. A dataset folder that already has its ``dataset.json`` is left as it is.
    """
    recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise InputError(dest, "exists and is not a folder")
    dataset = dest / recipe.dataset_folder
    if _complete(dataset / "dataset.json", recipe, max_cases):
        log.info("%s already present in %s; nothing to do", recipe.name, dataset)
        return dataset
    if max_cases is not None and recipe.per_case is None:
        raise ConfigError(f"--max-cases only applies to recipes with per-case downloads; {recipe.name} is one archive")
    dest.mkdir(parents=True, exist_ok=True)
    _warn_space(recipe, dest)
    sources = list(recipe.sources)
    if url_override:
        try:
            sources[0] = Source.model_validate({**sources[0].model_dump(), "url": url_override})
        except ValidationError as error:
            raise ConfigError(f"--url-override: {error.errors()[0]['msg']}") from error
    work = dest / FETCH_DIR
    work.mkdir(exist_ok=True)
    for source in sources:
        if not source.checksum:
            log.warning("%s: no checksum is published for %s, so it cannot be verified (%s)", recipe.name, source.url, source.unverified_reason)
    try:
        if recipe.layout == "msd":
            return _fetch_msd(recipe, sources[0], dest, work, keep_archive, progress)
        return _fetch_kits23(recipe, sources[0], dest, work, keep_archive, max_cases, progress)
    finally:
        if work.is_dir() and not any(work.iterdir()):
            work.rmdir()


def _complete(description: Path, recipe: Recipe, max_cases: int | None) -> bool:
    """dataset.json is written last, so it marks a finished fetch; a partial per-case fetch may be extended."""
    if not description.is_file():
        return False
    if recipe.per_case is None:
        return True
    try:
        data = json.loads(description.read_text())
    except (OSError, ValueError):
        return False
    if "medseg_note" not in data:
        return True
    return max_cases is not None and int(data.get("numTraining", 0)) >= max_cases


def _download_source(source: Source, work: Path, progress: bool) -> Path:
    from medseg.data.download import download

    return download(source.url, work / source.file_name, source.checksum, source.size_bytes, progress=progress)


def _extract_or_discard(archive: Path, destination: Path, keep_archive: bool) -> list[Path]:
    """Safely extract ``archive``. One that is refused (unsafe members) or damaged is deleted unless ``keep_archive``,
    like a checksum mismatch: a rerun would only refuse it again, and nothing of the failed fetch is left behind."""
    from medseg.data.archive import safe_extract

    try:
        return safe_extract(archive, destination)
    except InputError as error:
        if error.path == archive and not keep_archive:
            archive.unlink(missing_ok=True)
        raise


def _fetch_msd(recipe: Recipe, source: Source, dest: Path, work: Path, keep_archive: bool, progress: bool) -> Path:
    archive = _download_source(source, work, progress)
    created = _extract_or_discard(archive, dest, keep_archive)
    dataset = dest / recipe.dataset_folder
    if dataset not in created or not (dataset / "dataset.json").is_file() or not (dataset / "imagesTr").is_dir():
        raise InputError(archive, f"does not contain {recipe.dataset_folder}/dataset.json and imagesTr/ (found {', '.join(p.name for p in created)})")
    if not keep_archive:
        archive.unlink()
    log.info("%s ready in %s (MSD layout, no conversion needed)", recipe.name, dataset)
    return dataset


def _nifti_grid(path: Path) -> tuple[tuple[int, ...], object]:
    import nibabel as nib

    try:
        image = nib.load(str(path))
        return tuple(int(n) for n in image.shape[:3]), image.affine
    except Exception as error:  # nibabel raises many types for bad files
        raise InputError(path, f"not a readable NIfTI file ({error})") from error


def _fetch_kits23(recipe: Recipe, source: Source, dest: Path, work: Path, keep_archive: bool,
                  max_cases: int | None, progress: bool) -> Path:
    """Repository zip -> label maps; one CT download per case; MSD-style folder with dataset.json."""
    import numpy as np

    from medseg.data.download import download

    assert recipe.per_case is not None
    archive = _download_source(source, work, progress)
    staging = work / f"{recipe.dataset_folder}-repository"
    shutil.rmtree(staging, ignore_errors=True)
    _extract_or_discard(archive, staging, keep_archive)
    segmentations = sorted(staging.glob("*/dataset/case_*/segmentation.nii.gz"))
    if not segmentations:
        raise InputError(archive, "has no */dataset/case_*/segmentation.nii.gz: not the KiTS23 repository")
    if max_cases is not None:
        segmentations = segmentations[:max_cases]
    dataset = dest / recipe.dataset_folder
    for folder in ("imagesTr", "labelsTr"):
        (dataset / folder).mkdir(parents=True, exist_ok=True)
    display = _progress(progress)
    training = []
    try:
        overall = display.add_task("KiTS23 cases", total=len(segmentations)) if display else None
        for segmentation in segmentations:
            case = segmentation.parent.name  # case_00123
            number = int(case.split("_")[1])
            label_path = dataset / "labelsTr" / f"{case}.nii.gz"
            image_path = dataset / "imagesTr" / f"{case}.nii.gz"
            with atomic_path(label_path) as temporary:
                shutil.copyfile(segmentation, temporary)
            download(recipe.per_case.url(number), image_path, None, progress=display)
            image_grid, label_grid = _nifti_grid(image_path), _nifti_grid(label_path)
            if image_grid[0] != label_grid[0] or not np.allclose(image_grid[1], label_grid[1], atol=1e-3):
                image_path.unlink()  # so that a rerun downloads it again instead of trusting it
                raise InputError(image_path, f"grid {image_grid[0]} does not match its segmentation {label_grid[0]}; the image was deleted, rerun to download it again")
            training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
            if display:
                display.advance(overall)
    finally:
        if display:
            display.stop()
    description = {
        "name": recipe.name,
        "description": recipe.description.strip(),
        "reference": recipe.citation.strip(),
        "licence": recipe.license,
        "tensorImageSize": "3D",
        "modality": recipe.modality,
        "labels": recipe.labels,
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
    }
    if max_cases is not None:
        description["medseg_note"] = f"partial download: first {len(training)} cases (--max-cases)"
    with atomic_path(dataset / "dataset.json") as temporary:
        temporary.write_text(json.dumps(description, indent=2) + "\n")
    shutil.rmtree(staging, ignore_errors=True)
    if not keep_archive:
        archive.unlink()
    log.info("%s ready in %s: %d cases converted to the MSD layout", recipe.name, dataset, len(training))
    return dataset

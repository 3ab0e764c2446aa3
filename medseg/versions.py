"""Versions of the packages a result depends on, recorded next to every run and benchmark."""

from __future__ import annotations

from importlib import metadata

PACKAGES = ("medseg", "torch", "monai", "numpy", "scipy", "nibabel", "pydicom", "SimpleITK", "onnxruntime", "highdicom")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions

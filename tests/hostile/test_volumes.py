"""Hostile volume files (NIfTI, NRRD, MetaImage) are refused by `medseg convert` / `medseg info`.

Every file is generated here (seeded, nothing binary committed) and run in its own process
(:mod:`tests.hostile.harness`): exit 2, one `error:` line naming the file and the problem, nothing
left in the output folder, peak RSS under 500 MB even when the header declares 10 GB.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.hostile.harness import assert_refused, run_medseg

TEN_GB_INT16 = (2048, 2048, 1280)  # 10.7 GB of int16


# --- builders -------------------------------------------------------------------------------------
def nifti_bytes(array=None, *, qform_code=1, sform_code=1, **fields) -> bytes:
    """A single-file NIfTI-1 whose header fields are then overwritten as given (nibabel checks off)."""
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) if array is None else array
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    wide = array.dtype in (np.int64, np.uint64)  # nibabel wants those asked for explicitly
    image = nib.Nifti1Image(array, affine, dtype=array.dtype if wide else None)
    image.set_qform(affine, code=qform_code)
    image.set_sform(affine, code=sform_code)
    raw = image.to_bytes()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
    for key, value in fields.items():
        header[key] = value
    return header.binaryblock + raw[348:]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def nrrd(path: Path, fields: str, data: bytes = b"") -> Path:
    path.write_bytes(f"NRRD0004\n{fields}\n\n".encode() + data)
    return path


def metaimage(path: Path, fields: str, data: bytes = b"", data_file: str = "LOCAL") -> Path:
    head = f"ObjectType = Image\nNDims = 3\n{fields}\nElementDataFile = {data_file}\n"
    path.write_bytes(head.encode() + data)
    return path


def itk_image(path: Path, array: np.ndarray) -> Path:
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def random_bytes(count: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, count, dtype=np.uint8).tobytes()


# --- cases: name -> builder(tmp) returning (file, expected text, extra args, env) -------------------
def nan_affine(tmp):
    return write(tmp / "nan_affine.nii.gz", nifti_bytes(srow_x=[np.nan, 0, 0, 0])), "NaN/inf", [], {}


def singular_affine(tmp):
    return write(tmp / "singular.nii", nifti_bytes(qform_code=0, srow_y=[0, 0, 0, 0])), "singular", [], {}


def zero_voxel_size(tmp):
    return write(tmp / "zero_pixdim.nii", nifti_bytes(sform_code=0, pixdim=[1, 0, 1, 1, 1, 1, 1, 1])), "pixdim[1] is 0", [], {}


def negative_voxel_size(tmp):
    """Refused: NIfTI encodes flips in qfac; a negative pixdim is ambiguous (nibabel silently drops the sign)."""
    return write(tmp / "neg_pixdim.nii.gz", nifti_bytes(sform_code=0, pixdim=[1, 1, -2, 1, 1, 1, 1, 1])), "pixdim[2] is -2", [], {}


def nan_voxel_size(tmp):
    data = nifti_bytes(qform_code=0, sform_code=0, pixdim=[1, 1, 1, np.nan, 1, 1, 1, 1])
    return write(tmp / "nan_pixdim.nii", data), "pixdim[3] is nan", [], {}


def inf_voxel_size(tmp):
    return write(tmp / "inf_pixdim.nii", nifti_bytes(sform_code=0, pixdim=[1, np.inf, 1, 1, 1, 1, 1, 1])), "pixdim[1] is inf", [], {}


def complex_voxels(tmp):
    return write(tmp / "complex.nii", nifti_bytes(np.zeros((4, 5, 6), np.complex64))), "complex voxels (complex64)", [], {}


def rgb24_voxels(tmp):
    rgb = np.zeros((4, 5, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    return write(tmp / "rgb.nii.gz", nifti_bytes(rgb)), "structured voxels (R, G, B", [], {}


def rgba32_voxels(tmp):
    rgba = np.zeros((4, 5, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])
    return write(tmp / "rgba.nii", nifti_bytes(rgba)), "structured voxels (R, G, B, A", [], {}


def float128_voxels(tmp):
    """NIFTI_TYPE_FLOAT128 (datatype 1536), which nibabel cannot read here: still one clear line."""
    data = nifti_bytes(np.zeros((4, 5, 6, 2), np.float64), datatype=1536, bitpix=128, dim=[3, 4, 5, 6, 1, 1, 1, 1])
    return write(tmp / "f128.nii", data), "datatype code 1536 (float128)", [], {}


def no_voxels(tmp):
    return write(tmp / "empty_axis.nii", nifti_bytes(dim=[3, 4, 0, 6, 1, 1, 1, 1])), "at least one voxel", [], {}


def label_over_uint32(tmp):
    labels = np.zeros((4, 5, 6), np.int64)
    labels[1, 2, 3] = 2**33 + 1  # would wrap to 1 in uint32
    return write(tmp / "big_label.nii.gz", nifti_bytes(labels)), "value 8589934593", ["--label"], {}


def float_label_over_uint32(tmp):
    labels = np.zeros((4, 5, 6), np.float64)
    labels[0, 0, 0] = 2.0**40
    return write(tmp / "big_float_label.nii", nifti_bytes(labels)), "above the largest label", ["--label"], {}


def uint64_label_mha(tmp):
    labels = np.zeros((3, 4, 5), np.uint64)
    labels[1, 1, 1] = 2**63 + 5
    return itk_image(tmp / "big_label.mha", labels), "above the largest label", ["--label"], {}


def gz_declares_5gb(tmp):
    """The issue's 163-byte .nii.gz that declares 2048 x 2048 x 700 int16 voxels."""
    path = write(tmp / "tiny_huge.nii.gz", nifti_bytes(np.zeros((4, 5, 6), np.int16), dim=[3, 2048, 2048, 700, 1, 1, 1, 1]))
    assert path.stat().st_size < 200
    return path, "compressed data can hold", [], {}


def nii_declares_10gb(tmp):
    return write(tmp / "huge.nii", nifti_bytes(dim=[3, *TEN_GB_INT16, 1, 1, 1, 1])), "file holds only", [], {}


def nii_gz_declares_10gb_with_limit_raised(tmp):
    """Even with the voxel limit lifted, a stream that cannot expand to the declared size is refused first."""
    path = write(tmp / "huge_raised.nii.gz", nifti_bytes(dim=[3, *TEN_GB_INT16, 1, 1, 1, 1]))
    return path, "compressed data can hold", [], {"MEDSEG_MAX_VOXELS": str(10**12)}


def absurd_fourth_dim(tmp):
    return write(tmp / "four_d.nii", nifti_bytes(dim=[4, 4, 5, 6, 32767, 1, 1, 1])), "file holds only", [], {}


def vox_offset_past_end(tmp):
    return write(tmp / "offset.nii", nifti_bytes(vox_offset=1_000_000)), "file holds only 0 bytes", [], {}


def gzip_bomb_over_limit(tmp):
    """A real, consistent .nii.gz of 64 MiB of zeros (~65 KB compressed), over a configured limit of 10 M voxels."""
    shape = (256, 256, 512)
    image = nifti_bytes(np.zeros((1, 1, 1), np.int16), dim=[3, *shape, 1, 1, 1, 1])
    path = tmp / "bomb.nii.gz"
    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(image[:352])
        handle.write(bytes(int(np.prod(shape)) * 2))
    return path, "MEDSEG_MAX_VOXELS", [], {"MEDSEG_MAX_VOXELS": "10000000"}


def gzip_ends_short(tmp):
    """Declares 1 GiB of uint8 (within the limit and what 1.5 MB of deflate could hold) but holds 1.5 MB."""
    header = nifti_bytes(np.zeros((1, 1, 1), np.uint8), dim=[3, 1024, 1024, 1024, 1, 1, 1, 1])[:352]
    return write(tmp / "short_stream.nii.gz", header + random_bytes(1_500_000)), "data ends after", [], {}


def truncated_gzip(tmp):
    data = nifti_bytes(np.random.default_rng(3).integers(0, 30000, (40, 40, 40)).astype(np.int16))
    path = tmp / "cut.nii.gz"
    path.write_bytes(gzip.compress(data)[: len(data) // 3])
    return path, "truncated or corrupt", [], {}


SIZES = "type: short\ndimension: 3\nendian: little\nspacings: 1 1 1"


def nrrd_declares_10gb(tmp):
    path = nrrd(tmp / "huge.nrrd", f"{SIZES}\nsizes: {' '.join(map(str, TEN_GB_INT16))}\nencoding: raw", bytes(16))
    assert path.stat().st_size < 200
    return path, "file holds only", [], {}


def nrrd_gzip_declares_10gb(tmp):
    return nrrd(tmp / "huge_gz.nrrd", f"{SIZES}\nsizes: 50000 50000 2\nencoding: gzip", gzip.compress(bytes(1000))), "compressed data can hold", [], {}


def nrrd_four_d(tmp):
    return nrrd(tmp / "four_d.nrrd", "type: short\nendian: little\ndimension: 4\nsizes: 2 2 2 100000000\nencoding: raw", bytes(64)), "4 spatial dimensions", [], {}


def nrrd_parallel_axes(tmp):
    fields = "type: short\nendian: little\ndimension: 3\nsizes: 2 2 2\nspace: left-posterior-superior\nspace directions: (1,0,0) (1,0,0) (0,0,1)\nencoding: raw"
    return nrrd(tmp / "parallel.nrrd", fields, bytes(16)), "singular", [], {}


def nrrd_complex(tmp):
    return itk_image(tmp / "complex.nrrd", np.zeros((3, 4, 5), np.complex64)), "complex", [], {}


def mha_declares_10gb(tmp):
    path = metaimage(tmp / "huge.mha", f"DimSize = {' '.join(map(str, TEN_GB_INT16))}\nElementType = MET_SHORT", bytes(16))
    assert path.stat().st_size < 200
    return path, "file holds only", [], {}


def mha_compressed_declares_128gb(tmp):
    fields = "DimSize = 4096 4096 4096\nElementType = MET_SHORT\nCompressedData = True"
    return metaimage(tmp / "huge_z.mha", fields, zlib.compress(bytes(100))), "compressed data can hold", [], {}


def mha_absurd_channels(tmp):
    fields = "DimSize = 2 2 2\nElementType = MET_FLOAT\nElementNumberOfChannels = 100000000"
    return metaimage(tmp / "channels.mha", fields, bytes(64)), "file holds only", [], {}


def mha_zero_spacing(tmp):
    fields = "DimSize = 2 2 2\nElementType = MET_SHORT\nElementSpacing = 0 1 1"
    return metaimage(tmp / "zero_spacing.mha", fields, bytes(16)), "voxel size along axis 0 is 0", [], {}


def mhd_missing_raw(tmp):
    path = metaimage(tmp / "missing.mhd", "DimSize = 10 10 10\nElementType = MET_SHORT", data_file="missing.raw")
    return path, "missing.raw (named in the header) does not exist", [], {}


def mhd_short_raw(tmp):
    (tmp / "short.raw").write_bytes(bytes(100))
    path = metaimage(tmp / "short.mhd", "DimSize = 1000 1000 1000\nElementType = MET_SHORT", data_file="short.raw")
    return path, "file holds only 100 bytes", [], {}


CONVERT_CASES = [
    nan_affine, singular_affine, zero_voxel_size, negative_voxel_size, nan_voxel_size, inf_voxel_size,
    complex_voxels, rgb24_voxels, float128_voxels, label_over_uint32, float_label_over_uint32, uint64_label_mha,
    gz_declares_5gb, nii_declares_10gb, nii_gz_declares_10gb_with_limit_raised, gzip_bomb_over_limit,
    gzip_ends_short, truncated_gzip, nrrd_declares_10gb, nrrd_gzip_declares_10gb, nrrd_complex,
    mha_declares_10gb, mha_compressed_declares_128gb, mhd_missing_raw, mhd_short_raw,
]
INFO_CASES = [rgba32_voxels, no_voxels, absurd_fourth_dim, vox_offset_past_end, nrrd_four_d, nrrd_parallel_axes,
              mha_absurd_channels, mha_zero_spacing, nan_affine]
TEN_GB_CASES = [nii_declares_10gb, nii_gz_declares_10gb_with_limit_raised, nrrd_declares_10gb, mha_declares_10gb]


@pytest.mark.parametrize("build", CONVERT_CASES, ids=lambda build: build.__name__)
def test_convert_refuses(tmp_path, build):
    bad, expected, extra, env = build(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    outcome = run_medseg(["convert", bad, out_dir / "x.nii.gz", *extra], cwd=tmp_path, env=env)
    assert_refused(outcome, bad, expected, out_dir=out_dir)


@pytest.mark.parametrize("build", INFO_CASES, ids=lambda build: build.__name__)
def test_info_refuses(tmp_path, build):
    bad, expected, _, env = build(tmp_path)
    assert_refused(run_medseg(["info", bad], cwd=tmp_path, env=env), bad, expected)


@pytest.mark.parametrize("build", TEN_GB_CASES, ids=lambda build: build.__name__)
def test_small_file_declaring_10gb_is_refused_in_bounded_memory(tmp_path, build):
    """The issue's done-when: a few-hundred-byte file declaring >= 10 GB, refused with peak RSS < 500 MB."""
    bad, expected, _, env = build(tmp_path)
    assert bad.stat().st_size < 600
    assert_refused(run_medseg(["info", bad], cwd=tmp_path, env=env), bad, expected, rss_limit_mb=500.0)


def test_consistent_gzip_reads_with_about_one_copy(tmp_path):
    """128 MiB of zeros in a ~130 KB .nii.gz is a real volume: read it, holding the voxels about once (not 2-3x)."""
    shape = (512, 512, 256)
    data_mb = np.prod(shape) * 2 / 2**20
    path = tmp_path / "zeros.nii.gz"
    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(nifti_bytes(np.zeros((1, 1, 1), np.int16), dim=[3, *shape, 1, 1, 1, 1])[:352])
        handle.write(bytes(int(np.prod(shape)) * 2))
    outcome = run_medseg(["info", path, "--json"], cwd=tmp_path)
    assert outcome.code == 0, outcome.stderr
    assert json.loads(outcome.stdout)["shape"] == list(shape)
    baseline = run_medseg(["info", write(tmp_path / "small.nii.gz", nifti_bytes()), "--json"], cwd=tmp_path)
    assert outcome.peak_rss_mb - baseline.peak_rss_mb < 1.3 * data_mb, (outcome.peak_rss_mb, baseline.peak_rss_mb)

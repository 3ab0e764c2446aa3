"""A built-in CT-like liver tumor dataset, so medseg can be tried, taught and tested offline.

Each case is one random "patient" (a :class:`Phantom`) defined in **world RAS millimetres**: an
elliptical body with subcutaneous fat, muscle, spine, aorta, spleen, a deformed liver and 0-5
hypodense or enhancing tumors. The phantom is then sampled on that case's own grid (its own
spacing, field-of-view offset and stored orientation, some LPS or permuted), so images and labels
always agree voxel for voxel and every case depicts a physically consistent body whatever its
array layout. The output is an MSD-style folder (``imagesTr``, ``labelsTr``, ``dataset.json``).

Everything random comes from one seeded :class:`numpy.random.Generator` per case, spawned from the
dataset seed, so the same seed gives identical arrays.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator
from scipy import ndimage

from medseg.config import Section
from medseg.errors import ConfigError, InputError
from medseg.io.atomic import atomic_path
from medseg.io.readers import write_label_map, write_volume
from medseg.io.volume import Volume

log = logging.getLogger(__name__)

LABELS = {"0": "background", "1": "liver", "2": "tumor"}
HU_MIN, HU_MAX = -1024, 3071


class SynthConfig(Section):
    """Every knob of the generator; defaults give a laptop-sized dataset (~200x200x50 voxels per case)."""

    cases: int = Field(8, ge=1, le=10000, description="training cases (imagesTr/labelsTr)")
    test_cases: int = Field(0, ge=0, le=10000, description="held-out cases (imagesTs, plus labelsTs for scoring)")
    seed: int = Field(0, ge=0)
    name: str = "SyntheticLiverTumor"
    prefix: str = Field("case", pattern=r"^[A-Za-z0-9]+$")
    fov_mm: tuple[float, float, float] = (160.0, 160.0, 120.0)
    inplane_spacing_mm: tuple[float, float] = (0.7, 1.0)
    slice_spacing_mm: tuple[float, float] = (1.5, 5.0)
    # Stored orientation of case i is orientations[i % len]; all are exact permutations/flips of RAS.
    orientations: tuple[str, ...] = ("RAS", "LPS", "LAS", "PLS", "LPI")
    max_tumors: int = Field(5, ge=0, le=20)
    noise_sd_hu: tuple[float, float] = (10.0, 20.0)
    bias_hu: float = Field(8.0, ge=0.0, description="amplitude of the low-frequency shading; 0 disables it")
    test_labels: bool = True

    @field_validator("orientations")
    @classmethod
    def _valid_codes(cls, codes: tuple[str, ...]) -> tuple[str, ...]:
        for code in codes:
            axes = sorted({"L": "x", "R": "x", "P": "y", "A": "y", "I": "z", "S": "z"}.get(c, "?") for c in code)
            if len(code) != 3 or axes != ["x", "y", "z"]:
                raise ValueError(f"'{code}' is not an orientation code like RAS, LPS or PLS")
        if not codes:
            raise ValueError("give at least one orientation")
        return codes

    @field_validator("fov_mm", "inplane_spacing_mm", "slice_spacing_mm", "noise_sd_hu")
    @classmethod
    def _positive(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        if any(v <= 0 for v in values):
            raise ValueError("must be positive")
        if len(values) == 2 and values[0] > values[1]:
            raise ValueError("range must be (low, high)")
        return values


# --- the phantom: shapes in world RAS mm -------------------------------------------------------


@dataclass
class Blob:
    """A smoothly deformed ellipsoid: inside where |u| <= 1 + sum a_k sin(w_k . u + phi_k), u = R^T (p - c) / radii."""

    centre: np.ndarray
    radii: np.ndarray
    rotation: np.ndarray
    waves: np.ndarray  # (K, 3)
    amplitudes: np.ndarray  # (K,)
    phases: np.ndarray  # (K,)

    @property
    def reach_mm(self) -> float:
        return float(self.radii.max() * (1.0 + np.abs(self.amplitudes).sum()))

    def inside(self, points: np.ndarray) -> np.ndarray:
        u = ((points - self.centre) @ self.rotation) / self.radii
        surface = 1.0 + np.sin(u @ self.waves.T + self.phases) @ self.amplitudes
        return np.linalg.norm(u, axis=-1) <= surface

    def scaled(self, factor: float) -> Blob:
        return Blob(self.centre, self.radii * factor, self.rotation, self.waves, self.amplitudes, self.phases)

    def to_json(self) -> dict:
        return {"centre_ras_mm": _round(self.centre), "radii_mm": _round(self.radii)}


@dataclass
class Tumor:
    blob: Blob
    kind: str  # "hypodense" | "enhancing"
    hu: float
    core_hu: float | None  # necrotic core of large enhancing tumors


@dataclass
class Phantom:
    centre: np.ndarray  # body axis position (x, y) and mid-height z, world RAS mm
    body_axes: np.ndarray  # (a, b) semi-axes of the skin ellipse, mm
    body_waves: np.ndarray  # (2, 2) amplitude, phase of the angular skin perturbation
    fat_mm: float
    hu: dict[str, float]
    liver: Blob
    spleen: Blob
    visceral_fat: list[Blob]
    spine_centre: np.ndarray  # (x, y)
    aorta_centre: np.ndarray  # (x, y)
    tumors: list[Tumor] = field(default_factory=list)
    bias: np.ndarray = field(default_factory=lambda: np.zeros((3, 5)))  # rows: amplitude, wave (3), phase


def _round(values, digits: int = 3) -> list[float]:
    return [round(float(v), digits) for v in np.ravel(values)]


def _rotation(rng: np.random.Generator, max_degrees: tuple[float, float, float]) -> np.ndarray:
    angles = np.deg2rad([rng.uniform(-m, m) for m in max_degrees])
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _blob(rng: np.random.Generator, centre, radii, roughness: float, tilt=(10.0, 10.0, 20.0), waves: int = 3) -> Blob:
    directions = rng.normal(size=(waves, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return Blob(
        centre=np.asarray(centre, dtype=float),
        radii=np.asarray(radii, dtype=float),
        rotation=_rotation(rng, tilt),
        waves=directions * rng.uniform(1.5, 3.5, size=(waves, 1)),
        amplitudes=rng.uniform(0.3, 1.0, size=waves) * roughness / waves * 2.0,
        phases=rng.uniform(0, 2 * np.pi, size=waves),
    )


def random_phantom(rng: np.random.Generator, max_tumors: int = 5, bias_hu: float = 8.0) -> Phantom:
    """Draw one patient. The body axis sits near world (0, 0); the liver is on the patient's right (+x in RAS)."""
    centre = np.array([rng.uniform(-5, 5), rng.uniform(-5, 5), rng.uniform(-5, 5)])
    a, b = rng.uniform(62, 72), rng.uniform(48, 56)
    fat = rng.uniform(6, 16)
    hu = {
        "fat": rng.uniform(-110, -90),
        "muscle": rng.uniform(35, 48),
        "liver": rng.uniform(55, 66),
        "spleen": rng.uniform(45, 55),
        "aorta": rng.uniform(150, 200),
        "bone": rng.uniform(220, 320),
        "cortex": rng.uniform(600, 800),
    }
    liver_centre = centre + [rng.uniform(20, 28), rng.uniform(0, 8), rng.uniform(-10, 10)]
    liver = _blob(rng, liver_centre, [rng.uniform(40, 48), rng.uniform(33, 40), rng.uniform(40, 52)], roughness=0.12)
    spleen_centre = centre + [rng.uniform(-45, -38), rng.uniform(-25, -15), rng.uniform(-5, 15)]
    spleen = _blob(rng, spleen_centre, [rng.uniform(10, 14), rng.uniform(18, 24), rng.uniform(25, 35)], roughness=0.1)
    visceral = [
        _blob(rng, centre + [rng.uniform(-35, 0), rng.uniform(5, 30), rng.uniform(-40, 40)], rng.uniform(6, 14, 3), roughness=0.2)
        for _ in range(int(rng.integers(2, 5)))
    ]
    spine = centre[:2] + [rng.uniform(-3, 3), -b * rng.uniform(0.55, 0.62)]
    aorta = spine + [rng.uniform(-18, -12), rng.uniform(20, 26)]

    tumors: list[Tumor] = []
    for _ in range(int(rng.integers(0, max_tumors + 1))):
        for _attempt in range(20):  # rejection-sample a centre well inside the liver
            u = rng.uniform(-0.7, 0.7, 3)
            if np.linalg.norm(u) <= 0.7:
                break
        tumor_centre = liver.centre + liver.rotation @ (u * liver.radii)
        size_class = rng.choice(3, p=[0.4, 0.4, 0.2])
        radius = rng.uniform(*[(2.5, 5.0), (5.0, 10.0), (10.0, 18.0)][size_class])
        blob = _blob(rng, tumor_centre, radius * rng.uniform(0.8, 1.2, 3), roughness=0.15, tilt=(90, 90, 90))
        if rng.random() < 0.6:
            tumors.append(Tumor(blob, "hypodense", rng.uniform(20, 40), None))
        else:
            core = rng.uniform(15, 35) if radius > 10 else None
            tumors.append(Tumor(blob, "enhancing", rng.uniform(100, 150), core))

    bias = np.zeros((3, 5))
    for row in range(3):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        bias[row] = [rng.uniform(0, bias_hu), *(direction * 2 * np.pi / rng.uniform(200, 320)), rng.uniform(0, 2 * np.pi)]
    return Phantom(centre, np.array([a, b]), rng.uniform([-0.04, 0], [0.04, 2 * np.pi], (2, 2)), fat, hu, liver, spleen,
                   visceral, spine, aorta, tumors, bias)


# --- sampling on a grid ------------------------------------------------------------------------


def case_grid(rng: np.random.Generator, config: SynthConfig, centre: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Canonical RAS affine and shape for one case: random spacing, field of view centred near ``centre``."""
    inplane = round(float(rng.uniform(*config.inplane_spacing_mm)), 4)
    slices = float(np.clip(np.round(rng.uniform(*config.slice_spacing_mm) * 2) / 2, *config.slice_spacing_mm))
    spacing = np.array([inplane, inplane, slices])
    shape = tuple(int(max(8, round(f / s))) for f, s in zip(config.fov_mm, spacing))
    grid_centre = centre + rng.uniform([-8, -8, -10], [8, 8, 10])
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = np.round(grid_centre - spacing * (np.array(shape) - 1) / 2, 4)
    return affine, shape  # type: ignore[return-value]


class _Grid:
    """World coordinates of a canonical (diagonal, RAS) grid, separable per axis."""

    def __init__(self, affine: np.ndarray, shape: tuple[int, int, int]):
        self.shape = shape
        self.spacing = np.diag(affine)[:3].copy()
        self.axes = [(affine[d, 3] + np.arange(shape[d]) * self.spacing[d]).astype(np.float32) for d in range(3)]

    def box(self, centre: np.ndarray, reach: float) -> tuple[slice, slice, slice] | None:
        slices = []
        for d in range(3):
            lo = int(np.searchsorted(self.axes[d], centre[d] - reach))
            hi = int(np.searchsorted(self.axes[d], centre[d] + reach, side="right"))
            if hi <= lo:
                return None
            slices.append(slice(lo, hi))
        return tuple(slices)  # type: ignore[return-value]

    def points(self, box: tuple[slice, slice, slice]) -> np.ndarray:
        x, y, z = (self.axes[d][box[d]] for d in range(3))
        grid = np.empty((len(x), len(y), len(z), 3), np.float32)
        grid[..., 0] = x[:, None, None]
        grid[..., 1] = y[None, :, None]
        grid[..., 2] = z[None, None, :]
        return grid

    def blob_mask(self, blob: Blob) -> tuple[tuple[slice, slice, slice] | None, np.ndarray | None]:
        box = self.box(blob.centre, blob.reach_mm)
        if box is None:
            return None, None
        return box, blob.inside(self.points(box))


def _body_masks(phantom: Phantom, grid: _Grid) -> tuple[np.ndarray, np.ndarray]:
    """Skin and inner (below subcutaneous fat) masks; the body is a cylinder along z, flatter at the back."""
    x = grid.axes[0][:, None] - phantom.centre[0]
    y = grid.axes[1][None, :] - phantom.centre[1]
    theta = np.arctan2(y, x)
    a, b = phantom.body_axes
    b_side = np.where(y < 0, 0.85 * b, b)
    wobble = 1 + sum(amp * np.sin((k + 2) * theta + phase) for k, (amp, phase) in enumerate(phantom.body_waves))
    skin = (x / a) ** 2 + (y / b_side) ** 2 <= wobble**2
    inner = (x / (a - phantom.fat_mm)) ** 2 + (y / (b_side - phantom.fat_mm)) ** 2 <= wobble**2
    nz = grid.shape[2]
    return np.repeat(skin[:, :, None], nz, axis=2), np.repeat(inner[:, :, None], nz, axis=2)


def _disc(grid: _Grid, centre_xy: np.ndarray, radius: float) -> np.ndarray:
    x = grid.axes[0][:, None] - centre_xy[0]
    y = grid.axes[1][None, :] - centre_xy[1]
    return np.repeat(((x**2 + y**2) <= radius**2)[:, :, None], grid.shape[2], axis=2)


def render(phantom: Phantom, affine: np.ndarray, shape: tuple[int, int, int], noise_sd: float,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Sample ``phantom`` on a canonical RAS grid: (HU float32, labels uint8, tumor voxel counts)."""
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine)[:3])) or np.any(np.diag(affine)[:3] <= 0):
        raise ValueError("render() samples on a canonical (diagonal, positive) RAS grid; reorient afterwards")
    grid = _Grid(affine, shape)
    hu = np.full(shape, -1000.0, np.float32)
    labels = np.zeros(shape, np.uint8)
    skin, inner = _body_masks(phantom, grid)
    hu[skin] = phantom.hu["fat"]
    hu[inner] = phantom.hu["muscle"]
    for blob in phantom.visceral_fat:
        box, mask = grid.blob_mask(blob)
        if box is not None:
            hu[box][mask & inner[box]] = phantom.hu["fat"] + 10
    hu[_disc(grid, phantom.spine_centre, 16.0)] = phantom.hu["cortex"]
    hu[_disc(grid, phantom.spine_centre, 13.0)] = phantom.hu["bone"]
    hu[_disc(grid, phantom.aorta_centre, 11.0)] = phantom.hu["aorta"]
    box, mask = grid.blob_mask(phantom.spleen)
    if box is not None:
        hu[box][mask & inner[box]] = phantom.hu["spleen"]

    box, mask = grid.blob_mask(phantom.liver)
    counts: list[int] = []
    if box is not None:
        organ = mask & inner[box]
        texture = 4.0 * np.sin(grid.points(box) @ (phantom.liver.waves[0] / 25.0) + phantom.liver.phases[0])
        hu[box][organ] = (phantom.hu["liver"] + texture[organ]).astype(np.float32)
        labels[box][organ] = 1
    for tumor in phantom.tumors:
        tbox, tmask = grid.blob_mask(tumor.blob)
        if tbox is None:
            counts.append(0)
            continue
        inside = tmask & (labels[tbox] >= 1)  # tumors live inside the liver
        hu[tbox][inside] = tumor.hu
        if tumor.core_hu is not None:
            core = tumor.blob.scaled(0.55).inside(grid.points(tbox))
            hu[tbox][inside & core] = tumor.core_hu
        labels[tbox][inside] = 2
        counts.append(int(inside.sum()))

    # Scanner: point-spread blur (partial volume), shading, smoothed noise.
    sigma = (0.6 / grid.spacing[0], 0.6 / grid.spacing[1], 0.4)
    hu = ndimage.gaussian_filter(hu, sigma, mode="nearest")
    if phantom.bias[:, 0].any():
        shading = np.zeros(shape, np.float32)
        for amp, wx, wy, wz, phase in phantom.bias:
            shading += amp * np.sin(grid.axes[0][:, None, None] * wx + grid.axes[1][None, :, None] * wy
                                    + grid.axes[2][None, None, :] * wz + phase).astype(np.float32)
        hu += shading * skin
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), (0.7, 0.7, 0.5))
    hu += noise * np.float32(noise_sd / max(float(noise.std()), 1e-6))
    return hu, labels, counts


# --- the dataset -------------------------------------------------------------------------------


def case_rng(seed: int, index: int) -> np.random.Generator:
    """Case ``index``'s own generator: independent of how many cases are made, so adding cases changes none."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def case_phantom(seed: int, index: int, config: SynthConfig | None = None) -> Phantom:
    """The phantom behind case ``index`` of a dataset made with ``seed`` (for tests and teaching)."""
    config = config or SynthConfig()
    return random_phantom(case_rng(seed, index), config.max_tumors, config.bias_hu)


def synth_case(rng: np.random.Generator, config: SynthConfig, orientation: str) -> tuple[Volume, np.ndarray, dict]:
    """One case: image Volume (int16 HU, stored in ``orientation``), label array on the same grid, facts."""
    phantom = random_phantom(rng, config.max_tumors, config.bias_hu)
    affine, shape = case_grid(rng, config, phantom.centre)
    noise_sd = float(rng.uniform(*config.noise_sd_hu))
    hu, labels, counts = render(phantom, affine, shape, noise_sd, rng)
    image = Volume(np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16), affine, "image", {"modality": "CT"})
    image = image.reoriented(orientation)
    label_volume = Volume(labels, affine, "label").reoriented(orientation)
    facts = {
        "shape": list(image.shape),
        "spacing_mm": _round(image.spacing, 4),
        "orientation": image.orientation,
        "affine": [_round(row, 6) for row in image.affine],
        "noise_sd_hu": round(noise_sd, 2),
        "hu": {key: round(value, 1) for key, value in phantom.hu.items()},
        "body_centre_ras_mm": _round(phantom.centre),
        "liver": phantom.liver.to_json(),
        "liver_voxels": int((labels >= 1).sum()),
        "tumor_count": sum(1 for c in counts if c > 0),
        "tumors": [
            {**t.blob.to_json(), "kind": t.kind, "hu": round(t.hu, 1), "voxels": c}
            for t, c in zip(phantom.tumors, counts)
        ],
    }
    return image, label_volume.array, facts


def _write_json(data: dict, path: Path) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n")


def make_synthetic_dataset(out_dir: str | Path, cases: int = 8, seed: int = 0, test_cases: int = 0,
                           config: SynthConfig | None = None, progress: bool = False, **overrides) -> Path:
    """Write an MSD-style synthetic liver-tumor dataset into ``out_dir`` and return it.

    ``config`` (or keyword ``overrides`` of :class:`SynthConfig` fields) controls field of view,
    spacing, orientations, noise... Files already in ``out_dir`` with the same names are replaced
    atomically; other files are left alone.
    """
    try:
        config = (config or SynthConfig()).model_copy(update={"cases": cases, "seed": seed, "test_cases": test_cases, **overrides})
        config = SynthConfig.model_validate(config.model_dump())
    except ValueError as error:
        raise ConfigError(f"synthetic dataset: {error}") from error
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    folders = ["imagesTr", "labelsTr"] + (["imagesTs"] + (["labelsTs"] if config.test_labels else []) if config.test_cases else [])
    for folder in folders:
        (out / folder).mkdir(parents=True, exist_ok=True)

    total = config.cases + config.test_cases
    records, training, test = [], [], []
    started = time.perf_counter()
    with _maybe_progress(progress, total) as advance:
        for index in range(total):
            split = "train" if index < config.cases else "test"
            name = f"{config.prefix}_{index:03d}.nii.gz"
            image_path = out / ("imagesTr" if split == "train" else "imagesTs") / name
            label_path = out / ("labelsTr" if split == "train" else "labelsTs") / name
            orientation = config.orientations[index % len(config.orientations)]
            image, labels, facts = synth_case(case_rng(config.seed, index), config, orientation)
            write_volume(image, image_path)
            if split == "train" or config.test_labels:
                write_label_map(labels, image, label_path)
            relative_image = f"./{image_path.parent.name}/{name}"
            relative_label = f"./{label_path.parent.name}/{name}"
            if split == "train":
                training.append({"image": relative_image, "label": relative_label})
            else:
                test.append(relative_image)
            records.append({"case": name.removesuffix(".nii.gz"), "split": split, "image": relative_image,
                            "label": relative_label if split == "train" or config.test_labels else None, **facts})
            advance()

    dataset = {
        "name": config.name,
        "description": "Synthetic CT liver tumor phantoms generated by medseg (medseg data synth); not patient data.",
        "reference": "medseg synthetic generator",
        "licence": "CC0-1.0",
        "release": "1.0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": dict(LABELS),
        "numTraining": config.cases,
        "numTest": config.test_cases,
        "training": training,
        "test": test,
    }
    _write_json(dataset, out / "dataset.json")
    _write_json({"generator": "medseg.data.synthetic", "version": 1, "config": config.model_dump(mode="json"),
                 "cases": records}, out / "synthetic.json")
    log.info("wrote %d synthetic cases to %s in %.1f s", total, out, time.perf_counter() - started)
    return out


class _maybe_progress:
    """A rich progress bar when asked (the CLI), nothing otherwise (tests, notebooks)."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self._progress = enabled, total, None

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from medseg.logging_setup import new_progress

        self._progress = new_progress()
        self._progress.start()
        task = self._progress.add_task("synthesising cases", total=self.total)
        return lambda: self._progress.advance(task)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

"""The plan as typed objects: :class:`Plan`, its network :class:`Configuration` s and its :class:`Preprocessing`.

``plans.json`` on disk is the boundary (nnU-Net's plans file); code asks the objects
(``configuration.patch_size``, ``plan.preprocessing_identity(configuration)``), never nested dict
keys. Each configuration carries its network's shape as a typed :class:`Topology` (nnU-Net's
``arch_kwargs``), derived by the one rule in :mod:`medseg.models.topology` and handed to the model
builders unchanged. Plans of format 1 (medseg 0.1) load unchanged: each configuration's grid then is
the plan's target spacing, as it always was; formats 1-2 kept kernels, strides and widths flat in the
configuration and no knobs: they are read into a :class:`Topology` and given the knobs of the plan's
recorded ``plan.*`` settings.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from medseg.errors import ConfigError
from medseg.schema.records import Record, read_record, write_record

PLAN_VERSION = 3  # 3: the network shape as a nested typed ``topology`` with its knobs (2: flat keys, no knobs)
#: Version of the cached arrays' layout; part of every preprocessing identity, so a change rebuilds caches.
CACHE_VERSION = 3  # 3: typed case properties (geometry nested), per-configuration target spacing

NormalizationName = Literal["ct", "zscore", "none", "rescale"]


class ChannelInfo(Record):
    index: int
    name: str
    modality: str


class CaseFolderLayout(Record):
    """How the training data's per-case folders named their files (``medseg dataset import``), so that
    ``medseg infer`` reads such a folder as it is, exactly as the import prepared the training images."""

    channels: list[str] = Field(min_length=1, description="glob pattern of each channel's file, in channel order")
    mask: str | None = Field(None, description="foreground mask pattern: image voxels outside it were set to 0 at import")


class ChannelNormalization(Record):
    """How one input channel is normalised (CT: dataset statistics; others: per image)."""

    channel: int
    name: str
    modality: str
    scheme: NormalizationName
    clip: list[float] | None = None
    mean: float | None = None
    std: float | None = None
    use_nonzero_mask: bool | None = None
    reason: str = ""

    @model_validator(mode="after")
    def _ct_has_statistics(self) -> ChannelNormalization:
        if self.scheme == "ct" and (self.clip is None or self.mean is None or self.std is None):
            raise ValueError("a 'ct' normalization needs clip, mean and std")
        return self


class Resampling(Record):
    image_order: Literal[0, 1, 3] = 3
    label: Literal["nearest", "per_class_linear"] = "per_class_linear"
    separate_axis_ratio: float = Field(3.0, gt=1)
    out_of_plane_order: Literal[0, 1] = 0


class Preprocessing(Record):
    """Every choice that changes the cached arrays, except the grid (each configuration has its own)."""

    orientation: Literal["RAS"] = "RAS"
    crop: str = "bounding box of voxels nonzero in any channel or labelled"
    target_spacing: list[float] = Field(min_length=3, max_length=3)
    num_channels: int = Field(ge=1)
    labels: list[int]
    normalization: list[ChannelNormalization]
    resampling: Resampling = Field(default_factory=Resampling)
    class_locations_per_class: int = Field(2000, ge=1)
    seed: int = 0
    ignore_label: int | None = Field(None, description="label value that marks unannotated voxels (nnU-Net v2 'ignore')")

    @model_validator(mode="after")
    def _one_scheme_per_channel(self) -> Preprocessing:
        if len(self.normalization) != self.num_channels:
            raise ValueError(f"normalization lists {len(self.normalization)} channel(s), num_channels is {self.num_channels}")
        return self

    def identity_payload(self, target_spacing: list[float]) -> dict[str, Any]:
        """What the cache identity covers: these settings on that grid (reasons are prose, not settings)."""
        data = self.model_dump(mode="json", exclude_none=True)
        data["target_spacing"] = [float(s) for s in target_spacing]
        for entry in data["normalization"]:
            entry.pop("reason", None)
        return data


class DeviceProfile(Record):
    """The machine a plan was sized for: patch and batch follow its memory, the CPU plan its speed."""

    kind: Literal["cpu", "cuda"]
    name: str = ""
    memory_gb: float = Field(gt=0, description="GPU memory (cuda) or RAM (cpu) the plan may use")
    cores: int = Field(1, ge=1)
    source: str = Field("detected", description="detected on this machine, a preset, or set in the config")


class ShapeKnobs(Record):
    """The settings a network shape is derived with; ``plan.*`` and ``model.*`` use these same names."""

    base_features: int = Field(32, ge=1, description="channels of the full-resolution stage, doubling per stage")
    max_features: int | None = Field(None, ge=1, description="cap on channels per stage; None = 320 in 3D, 512 in 2D (nnU-Net)")
    max_pooling_steps: int | None = Field(None, ge=0, description="most down-sampling steps (stages - 1); None = as deep as the patch allows")
    min_feature_map_size: int = Field(4, ge=1, description="an axis is pooled only while its feature map stays at least this large")


#: Knobs that change the stages (kernels and strides); the others change only the widths.
DEPTH_KNOBS = ("max_pooling_steps", "min_feature_map_size")


class Topology(Record):
    """A network's shape, in the preprocessed arrays' axis order: what every model builder lays its stages out from.

    A *stage* is one encoder resolution level; the last one is the bottleneck. ``strides[0]`` is all
    ones (full resolution), each later stride is the down-sampling into that stage. ``knobs`` is None
    only for a layout read from a plan or checkpoint older than the knobs (format 1-2) outside a plan.
    """

    kernel_sizes: list[list[int]] = Field(min_length=1, description="per stage, the per-axis convolution kernel")
    strides: list[list[int]] = Field(min_length=1, description="per stage, the per-axis down-sampling into it")
    features_per_stage: list[int] = Field(min_length=1, description="per stage, the output channels")
    knobs: ShapeKnobs | None = None
    patch_size: list[int] | None = Field(None, exclude=True, description="the configuration's patch (filled in by it, stored once)")
    spacing: list[float] | None = Field(None, exclude=True, description="the configuration's spacing (filled in by it, stored once)")

    @model_validator(mode="after")
    def _one_entry_per_stage(self) -> Topology:
        dims = len(self.strides[0])
        if dims not in (2, 3) or any(len(entry) != dims for entry in [*self.kernel_sizes, *self.strides]):
            raise ValueError(f"kernel_sizes {self.kernel_sizes} and strides {self.strides} must all have 2 or 3 axes, the same number")
        if not len(self.kernel_sizes) == len(self.strides) == len(self.features_per_stage):
            raise ValueError(f"{len(self.kernel_sizes)} kernel_sizes, {len(self.strides)} strides and {len(self.features_per_stage)} "
                             "features_per_stage: one each per stage")
        if min(min(entry) for entry in [*self.kernel_sizes, *self.strides]) < 1 or min(self.features_per_stage) < 1:
            raise ValueError("kernel sizes, strides and features must be positive")
        return self

    @property
    def spatial_dims(self) -> int:
        return len(self.strides[0])

    @property
    def n_stages(self) -> int:
        return len(self.strides)

    @property
    def features(self) -> list[int]:
        return self.features_per_stage

    @property
    def divisor(self) -> list[int]:
        """Per-axis factor every input size must be a multiple of (product of all strides)."""
        return [math.prod(stride[axis] for stride in self.strides) for axis in range(self.spatial_dims)]

    @property
    def min_feature_map_size(self) -> int:
        return self.knobs.min_feature_map_size if self.knobs is not None else ShapeKnobs().min_feature_map_size


#: Plan formats 1-2 kept the network flat in the configuration.
_FLAT_NETWORK_KEYS = ("n_stages", "features_per_stage", "kernel_sizes", "strides")


class Configuration(Record):
    """One trainable network configuration: patch, batch, grid and topology, each with its reason."""

    name: str = ""
    patch_size: list[int]
    batch_size: int = Field(ge=1)
    spacing: list[float] = Field(description="spacing of the network's axes (the in-plane axes in 2D)")
    target_spacing: list[float] | None = Field(None, description="3D grid of the cache this configuration trains on; None = the plan's")
    topology: Topology | None = Field(None, description="the network's shape and the knobs it was derived with; None only in a "
                                      "checkpoint of medseg <= 0.2 whose patch was overridden (its shape is then derived when built)")
    estimated_memory_gb: float | None = None
    patch_reason: str = ""
    batch_reason: str = ""
    spacing_reason: str = ""
    slice_axis: int | None = Field(None, ge=0, le=2, description="2D only: the RAS array axis the slices are taken across")
    plane_axes: list[int] | None = None

    @model_validator(mode="before")
    @classmethod
    def _read_flat_network(cls, data: Any) -> Any:
        """Plan formats 1-2 (and their checkpoints) kept kernels, strides and widths flat: read them into a Topology."""
        if not isinstance(data, dict) or not any(key in data for key in _FLAT_NETWORK_KEYS):
            return data
        from medseg.models.topology import stored_topology  # the rule's module imports these records

        data = dict(data)
        flat = {key: data.pop(key) for key in _FLAT_NETWORK_KEYS if key in data}
        if data.get("topology") is not None:
            raise ValueError(f"give the network either as 'topology' or as the flat keys of plan format 2 ({', '.join(flat)}), not both")
        try:
            data["topology"] = stored_topology({**flat, "patch_size": data.get("patch_size"), "spacing": data.get("spacing")})
        except ConfigError as error:
            raise ValueError(str(error)) from error
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Configuration:
        dims = len(self.patch_size)
        if dims not in (2, 3) or min(self.patch_size) < 1:
            raise ValueError(f"patch_size {self.patch_size} must be 2 or 3 positive sizes")
        if len(self.spacing) != dims:
            raise ValueError(f"spacing {self.spacing} must have {dims} values like patch_size")
        if dims == 2 and self.slice_axis is None:
            raise ValueError("a 2D configuration needs slice_axis")
        if dims == 3 and self.slice_axis is not None:
            raise ValueError("slice_axis is for 2D configurations only")
        if dims == 2:
            expected = [a for a in range(3) if a != self.slice_axis]
            if self.plane_axes is not None and list(self.plane_axes) != expected:
                raise ValueError(f"plane_axes {self.plane_axes} do not match slice_axis {self.slice_axis} (expected {expected})")
            self.plane_axes = expected
        if self.topology is not None:
            if self.topology.spatial_dims != dims:
                raise ValueError(f"topology has {self.topology.spatial_dims} axes, patch_size {self.patch_size} has {dims}")
            self.topology.patch_size, self.topology.spacing = list(self.patch_size), list(self.spacing)
        return self

    @property
    def spatial_dims(self) -> int:
        return len(self.patch_size)

    @property
    def is_2d(self) -> bool:
        return self.spatial_dims == 2

    @property
    def patch(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.patch_size)

    def grid_spacing(self) -> list[float]:
        """The 3D target spacing of this configuration's cache (filled in by :class:`Plan`)."""
        if self.target_spacing is None:
            raise ConfigError(f"configuration {self.name!r} has no target spacing; load it through its Plan")
        return list(self.target_spacing)

    @property
    def anisotropic(self) -> bool:
        """Thick slices (one axis > 3x coarser): augmentation then rotates in-plane only, as nnU-Net."""
        spacing = self.grid_spacing()
        return bool(max(spacing) / min(spacing) > 3.0)

    @property
    def kernel_sizes(self) -> list[list[int]] | None:
        return None if self.topology is None else self.topology.kernel_sizes

    @property
    def strides(self) -> list[list[int]] | None:
        return None if self.topology is None else self.topology.strides

    @property
    def features_per_stage(self) -> list[int] | None:
        return None if self.topology is None else self.topology.features_per_stage

    @property
    def n_stages(self) -> int | None:
        return None if self.topology is None else self.topology.n_stages

    def with_overrides(self, patch_size: list[int] | None = None, batch_size: int | None = None,
                       knobs: dict[str, int] | None = None) -> Configuration:
        """A copy with another patch, batch size or network knobs (``model.*``); a changed patch or knob re-derives the
        network by the one rule (:func:`medseg.models.topology.reshape`) from this configuration's own knobs."""
        from medseg.models.topology import reshape  # the rule's module imports these records

        updates: dict[str, Any] = {}
        patch = list(self.patch_size)
        if patch_size is not None and list(patch_size) != patch:
            if len(patch_size) != self.spatial_dims:
                raise ConfigError(f"train.patch_size {list(patch_size)} must have {self.spatial_dims} sizes for the {self.name} configuration")
            patch = [int(s) for s in patch_size]
            updates.update(patch_size=patch, patch_reason="set in the config (train.patch_size)")
        topology = reshape(self.topology, self.spacing, patch, knobs or {}, self.spatial_dims)
        if topology is not self.topology:
            updates.update(topology=topology, estimated_memory_gb=None)
        if batch_size is not None and batch_size != self.batch_size:
            updates.update(batch_size=int(batch_size), batch_reason="set in the config (train.batch_size)")
        return self.model_copy(update=updates) if updates else self

    def complete_topology(self, settings: dict[str, Any], cpu: bool) -> None:
        """Give a configuration read without knobs (plan format 1-2, a hand-written plan) the plan's: those of its
        recorded ``plan.*`` ``settings`` for its device; derive the shape by the one rule when it has none."""
        from medseg.models.topology import derive_topology, planned_knobs  # the rule's module imports these records

        if self.topology is not None and self.topology.knobs is not None:
            return
        knobs = planned_knobs(settings, cpu, self.spatial_dims, self.features_per_stage)
        if self.topology is None:
            self.topology = derive_topology(self.spacing, self.patch_size, knobs)
            self.topology.patch_size = list(self.patch_size)  # a patch the rule would pad fails where the network is built
        else:
            self.topology.knobs = knobs

    def network_plan(self) -> Topology:
        """The network's shape as the model builders take it (derived by the one rule if a checkpoint of medseg <= 0.2 lacks it)."""
        from medseg.models.topology import reshape  # the rule's module imports these records

        return reshape(self.topology, self.spacing, list(self.patch_size), {}, self.spatial_dims)


class Plan(Record):
    """A dataset's plan: preprocessing shared by every configuration, and the configurations."""

    plan_version: int = PLAN_VERSION
    medseg_version: str = ""
    dataset: str
    dataset_format: str = "msd"
    channels: list[ChannelInfo] = Field(default_factory=list)
    labels: dict[int, str]
    regions: dict[str, list[int]] = Field(default_factory=dict)
    regions_class_order: list[int] | None = None
    case_folder: CaseFolderLayout | None = None
    canonical_orientation: Literal["RAS"] = "RAS"
    transpose: list[int] = Field(default_factory=lambda: [0, 1, 2])
    target_spacing: list[float] = Field(min_length=3, max_length=3)
    target_spacing_reason: str = ""
    resampling_note: str = ""
    preprocessing: Preprocessing
    planned_for: DeviceProfile | None = None
    gpu_memory_gb: float | None = Field(None, description="format 1 only: the fixed memory budget the plan was sized for")
    configurations: dict[str, Configuration]
    aliases: dict[str, str] = Field(default_factory=dict, description="short names, e.g. '3d' -> the device's default 3D configuration")
    alias_reasons: dict[str, str] = Field(default_factory=dict)
    fingerprint_summary: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict, description="the plan.* settings it was made with")
    preprocessing_hash: str = ""

    @model_validator(mode="before")
    @classmethod
    def _accept_older_formats(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("plan_version") not in (None, 1, 2, PLAN_VERSION):
            raise ValueError(f"plan version {data.get('plan_version')} is not supported (this medseg reads 1 to {PLAN_VERSION}); re-run `medseg plan`")
        if isinstance(data, dict) and data.get("plan_version") == 2:  # read into format 3 (Configuration, complete_topology)
            data = {**data, "plan_version": PLAN_VERSION}
        return data

    @model_validator(mode="after")
    def _complete_configurations(self) -> Plan:
        if not self.configurations:
            raise ValueError("the plan has no configurations")
        cpu = self.planned_for is not None and self.planned_for.kind == "cpu"
        for name, configuration in self.configurations.items():
            configuration.name = name
            if configuration.target_spacing is None:
                configuration.target_spacing = list(self.target_spacing)
            configuration.complete_topology(self.config, cpu)
        if self.regions and (self.regions_class_order is None or len(self.regions_class_order) != len(self.regions)):
            raise ValueError(f"{len(self.regions)} region(s) need regions_class_order with one label per region, got {self.regions_class_order}")
        for alias, target in self.aliases.items():
            if target not in self.configurations:
                raise ValueError(f"alias {alias!r} names {target!r}, which is not a configuration of this plan")
        self.preprocessing_hash = self.preprocessing_identity(self.default_configuration_name())
        return self

    # --- questions the pipeline asks ---------------------------------------------------------
    @property
    def num_channels(self) -> int:
        return self.preprocessing.num_channels

    @property
    def foreground_labels(self) -> list[int]:
        return sorted(label for label in self.labels if label > 0)

    @property
    def has_regions(self) -> bool:
        """nnU-Net v2 region-based: one sigmoid output per region, label maps painted by ``regions_class_order``."""
        return bool(self.regions)

    @property
    def num_outputs(self) -> int:
        """Network output channels: one per region, or one per label (background included)."""
        return len(self.regions) if self.regions else len(self.labels)

    def region_values(self) -> list[tuple[int, ...]]:
        return [tuple(values) for values in self.regions.values()]

    def output_labels(self) -> dict[int, str]:
        """The values a predicted label map can hold, with names: for regions, background and what the regions paint."""
        if not self.regions:
            return dict(self.labels)
        painted = dict.fromkeys(self.regions_class_order or [])
        return {0: self.labels.get(0, "background"), **{value: self.labels.get(value, f"label_{value}") for value in painted}}

    def default_configuration_name(self) -> str:
        return self.resolve("3d") if "3d" in self.names() else next(iter(self.configurations))

    def names(self) -> list[str]:
        """Every name a configuration answers to (aliases first)."""
        return [*self.aliases, *self.configurations]

    def resolve(self, name: str) -> str:
        """``3d`` -> the configuration it stands for in this plan; other names unchanged."""
        if name in self.configurations:
            return name
        if name in self.aliases:
            return self.aliases[name]
        if name in ("3d", "3d_fullres") and "3d" in self.configurations:  # format-1 plans
            return "3d"
        raise ConfigError(f"configuration {name!r}: the plan has {', '.join(self.names())}")

    def configuration(self, name: str) -> Configuration:
        """The named configuration (aliases resolved); an unknown name lists the ones the plan has."""
        return self.configurations[self.resolve(name)]

    def preprocessing_identity(self, configuration: Configuration | str) -> str:
        """Hash of everything that changes the cached arrays of ``configuration`` (patch and batch do not)."""
        chosen = self.configuration(configuration) if isinstance(configuration, str) else configuration
        spacing = chosen.target_spacing or self.target_spacing
        payload = json.dumps({"cache_version": CACHE_VERSION, "preprocessing": self.preprocessing.identity_payload(spacing)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def cache_name(self, configuration: Configuration | str) -> str:
        """Folder name of a configuration's cache: configurations on the plan's grid share ``preprocessed``."""
        chosen = self.configuration(configuration) if isinstance(configuration, str) else configuration
        spacing = chosen.target_spacing or self.target_spacing
        if all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(spacing, self.target_spacing)):
            return "preprocessed"
        return "preprocessed_" + "x".join(f"{s:g}" for s in spacing) + "mm"


def read_plan(path: str | Path) -> Plan:
    """A plan file, validated; the error names the file and the field."""
    return read_record(Plan, path)


def write_plan(plan: Plan, path: str | Path) -> Path:
    return write_record(plan, path)

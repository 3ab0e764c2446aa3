"""The checkpoint payload as a typed record: one builder for training and benchmarks, one validating reader.

A checkpoint is stored with ``torch.save`` as plain containers and tensors (so
``torch.load(weights_only=True)`` reads it and loading cannot run code). :class:`CheckpointPayload`
is what code sees. ``training`` holds the resume state (optimizer, scaler, counters, every rank's
RNG state); an *inference* checkpoint leaves it out and is a fraction of the size.

Format 1 (medseg 0.1) kept the resume state at the top level; it is read into ``training``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from medseg.schema.plan import Configuration, Plan
from medseg.schema.records import Record

#: 1: medseg 0.1 (flat resume state); 2: typed payload; 3: the configuration carries its network topology (plan
#: format 3), which a reader of format 2 would not build. Formats 1 and 2 are still read.
FORMAT_VERSION = 3


class ModelSpec(Record):
    """Which network to rebuild: registry name, channels, classes and the plan configuration it was built from."""

    name: str
    in_channels: int = Field(ge=1)
    out_channels: int = Field(ge=1)
    configuration: Configuration


class ValidationScores(Record):
    dice: dict[str, float]
    mean_dice: float
    kind: str = Field("held-out fold", description="'held-out fold K', or 'training cases (fold all)' when every case was trained on")


class TrainingState(Record):
    """What ``--resume`` needs beyond the weights."""

    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    iteration: int = Field(ge=0)
    elapsed_s: float = Field(ge=0)
    best_ema_dice: float
    ema_dice: float | None
    history: list[dict[str, Any]] = Field(default_factory=list)
    rng: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per rank: python, numpy, torch and cuda RNG states")


class CheckpointPayload(Record):
    format_version: int = FORMAT_VERSION
    medseg_version: str = ""
    model: dict[str, Any] = Field(description="the network's state_dict")
    model_spec: ModelSpec
    config: dict[str, Any] = Field(description="the resolved run config (RunConfig as JSON)")
    plan: Plan
    labels: dict[int, str]
    fold: int | str | None = None
    epoch: int = Field(0, ge=0, description="epochs completed when this checkpoint was written")
    train_cases: list[str] = Field(default_factory=list)
    val_cases: list[str] = Field(default_factory=list)
    validation: ValidationScores | None = None
    training: TrainingState | None = None

    @model_validator(mode="before")
    @classmethod
    def _read_format_1(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        version = data.get("format_version")
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise ValueError(f"checkpoint format {version} is newer than this medseg reads ({FORMAT_VERSION}); upgrade medseg")
        if version != 1:
            return data
        data = dict(data)
        spec = data.get("model_spec") or {}
        if not isinstance(spec, dict):  # the field's own validation says what is wrong
            return data
        spec = dict(spec)
        if "plan_configuration" in spec:
            spec["configuration"] = _format_1_configuration(spec.pop("plan_configuration"), data.get("plan"), data.get("config"))
        data["model_spec"] = spec
        data.pop("normalization", None)
        if "optimizer" in data:
            scheduler = data.pop("scheduler", {}) or {}
            scheduler = scheduler if isinstance(scheduler, dict) else {}
            data["training"] = {
                "optimizer": data.pop("optimizer"), "scaler": data.pop("scaler", {}),
                "iteration": scheduler.get("iteration", 0), "elapsed_s": scheduler.get("elapsed_s", 0.0),
                "best_ema_dice": data.pop("best_ema_dice", float("-inf")),
                "ema_dice": data.pop("ema_dice", None), "history": data.pop("history", []), "rng": data.pop("rng", {}),
            }
        data["format_version"] = FORMAT_VERSION
        return data

    @property
    def configuration(self) -> Configuration:
        return self.model_spec.configuration

    def for_inference(self) -> CheckpointPayload:
        """The same checkpoint without resume state: weights, plan, labels and config."""
        return self.model_copy(update={"training": None})

    def to_storage(self) -> dict[str, Any]:
        """Plain containers and tensors for ``torch.save`` (tensors pass through untouched)."""
        data = self.model_dump(mode="python", exclude={"model", "training", "plan", "model_spec"})
        data["plan"] = self.plan.model_dump(mode="json")
        data["model_spec"] = self.model_spec.model_dump(mode="json")
        data["labels"] = {str(k): v for k, v in self.labels.items()}
        data["model"] = self.model
        if self.training is not None:
            data["training"] = self.training.model_dump(mode="python")
        return data


def _format_1_configuration(configuration: Any, plan: Any, config: Any) -> Any:
    """A format-1 ``plan_configuration`` dict -> Configuration fields (name and grid from the plan)."""
    if not isinstance(configuration, dict):
        return configuration
    result = dict(configuration)
    train = config.get("train") if isinstance(config, dict) else None
    name = train.get("configuration") if isinstance(train, dict) else None
    result.setdefault("name", name or ("2d" if len(result.get("patch_size", [])) == 2 else "3d"))
    if isinstance(plan, dict) and "target_spacing" in plan:
        result.setdefault("target_spacing", plan["target_spacing"])
    if "spacing" not in result and isinstance(plan, dict):
        planned = plan.get("configurations")
        planned = planned.get(result["name"], {}) if isinstance(planned, dict) else {}
        if isinstance(planned, dict) and "spacing" in planned:
            result["spacing"] = planned["spacing"]
    if len(result.get("patch_size", [])) == 2:
        result["slice_axis"] = 2  # format 1 trained and inferred 2D networks on the last RAS axis, whatever the plan said
        result.pop("plane_axes", None)
    return result

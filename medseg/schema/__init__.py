"""The typed objects that flow between pipeline stages: the plan, each case's geometry, the checkpoint.

JSON (and ``torch.save`` containers) appear only where these are read or written.
"""

from medseg.schema.case import CaseGeometry, CaseProperties, ChannelNormalizationUsed, read_properties, write_properties
from medseg.schema.checkpoint import FORMAT_VERSION, CheckpointPayload, ModelSpec, TrainingState, ValidationScores
from medseg.schema.plan import (
    CACHE_VERSION,
    PLAN_VERSION,
    ChannelNormalization,
    Configuration,
    DeviceProfile,
    Plan,
    Preprocessing,
    read_plan,
    write_plan,
)
from medseg.schema.records import Record, read_json, read_record, validate_record, write_record

__all__ = [
    "CACHE_VERSION", "FORMAT_VERSION", "PLAN_VERSION", "CaseGeometry", "CaseProperties", "ChannelNormalization",
    "ChannelNormalizationUsed", "CheckpointPayload", "Configuration", "DeviceProfile", "ModelSpec", "Plan", "Preprocessing",
    "Record", "TrainingState", "ValidationScores", "read_json", "read_plan", "read_properties", "read_record",
    "validate_record", "write_plan", "write_properties", "write_record",
]

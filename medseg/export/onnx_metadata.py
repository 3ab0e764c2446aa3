"""What an exported ONNX file carries besides the graph: everything inference needs, in one JSON entry.

Stored as the model's ``metadata_props`` entry ``"medseg"`` (not in a sidecar file): a ``.onnx`` file
cannot be separated from its plan, labels and normalisation, and any ONNX Runtime (C++, C#, JS)
reads it with ``session.get_modelmeta().custom_metadata_map["medseg"]``. Several folds are
exported as one file per fold in a folder (``fold_0.onnx``, ...), each self-contained; medseg
averages their softmax inside each window, as for PyTorch folds. ``model_id`` (the same in every file
of one export) and ``checkpoint.sha256`` let the loader refuse a folder that mixes exports.

Models with a lesion-centre head (``lesion_instances``) have a second graph output,
``objectness`` (the head's logit), named by ``objectness_output``.

Also the one place that imports onnx/onnxruntime, lazily, so both stay optional extras.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medseg import __version__
from medseg.errors import ConfigError, InputError

METADATA_KEY = "medseg"
FORMAT_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "image", "logits"
#: Second graph output of networks with a lesion-centre head (``lesion_instances``): the objectness logit (B, 1, *spatial).
OBJECTNESS_NAME = "objectness"
INSTALL_HINT = "pip install medseg[onnx]"


def require(module: str):
    """Import ``onnx``, ``onnxruntime`` or ``onnxscript``, or fail with one line saying how to install them."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ConfigError(f"ONNX export and inference need the optional {module} package, which is not installed: {INSTALL_HINT}") from error


@dataclass
class OnnxMetadata:
    """The ``"medseg"`` metadata entry of one exported fold network."""

    name: str  # registered architecture, e.g. dynunet
    plan: dict[str, Any]  # the Plan as JSON
    labels: dict[int, str]
    in_channels: int
    patch_size: list[int]
    model_id: dict[str, Any]  # LoadedModel.model_id() of the exported model (all folds)
    checkpoint: dict[str, Any]  # this fold's checkpoint: file, sha256, fold, epoch, validation
    config: dict[str, Any] = field(default_factory=dict)
    configuration: dict[str, Any] = field(default_factory=dict)  # the plan Configuration the network was built from
    verification: dict[str, Any] = field(default_factory=dict)  # PyTorch vs ONNX Runtime at export time
    opset: int | None = None
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    objectness_output: str | None = None  # the lesion-centre head's output, for models that have one
    medseg_version: str = __version__
    format_version: int = FORMAT_VERSION

    @property
    def normalization(self) -> Any:
        return (self.plan.get("preprocessing") or {}).get("normalization")

    def to_json(self) -> str:
        data = asdict(self)
        data["labels"] = {str(k): v for k, v in self.labels.items()}
        data["normalization"] = self.normalization  # duplicated at top level for non-medseg readers
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str | Path) -> OnnxMetadata:
        try:
            data = json.loads(text)
            if int(data.get("format_version", 0)) > FORMAT_VERSION:
                raise InputError(source, f"ONNX metadata format {data['format_version']} is newer than this medseg understands; upgrade medseg")
            data.pop("normalization", None)
            data["labels"] = {int(k): str(v) for k, v in data["labels"].items()}
            known = set(cls.__dataclass_fields__)
            return cls(**{key: value for key, value in data.items() if key in known})
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise InputError(source, f"ONNX file's medseg metadata is unreadable ({type(error).__name__}: {str(error)[:120]})") from error

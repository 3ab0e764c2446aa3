"""The one typed configuration object of a medseg run, composed from the sections each module owns.

Load it with :func:`load_run_config` (defaults <- ``configs/*.yaml`` <- ``--set a.b=c``); training
saves it resolved as ``config.yaml`` in the run folder, and inference, evaluation and reports read
it from there (or from the checkpoint, which embeds it).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from medseg.config import load
from medseg.data.config import DataConfig
from medseg.losses.config import LossConfig
from medseg.infer.config import InferConfig
from medseg.metrics.config import EvaluateConfig
from medseg.models.config import ModelConfig
from medseg.train.config import TrainConfig
from medseg.transforms.augment import AugmentConfig


class RunConfig(DataConfig):
    """Sections: fingerprint, plan, preprocess (data pipeline), model, loss, augment, train, infer, evaluate."""

    dataset: str | None = Field(None, description="raw dataset folder (MSD or nnU-Net layout) or a preprocessed cache; `medseg train CONFIG.yaml` reads it from here")
    work_dir: str | None = Field(None, description="where plans and the preprocessed cache go [default: medseg_work/<dataset name>]")
    run_dir: str | None = Field(None, description="training output folder [default: runs/<dataset name>/<configuration>]; folds go to fold_<k> inside")
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    infer: InferConfig = Field(default_factory=InferConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    return load(RunConfig, path, overrides)

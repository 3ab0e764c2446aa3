"""The schema of medseg's one configuration object, :class:`RunConfig`, composed of the sections each module owns.

Load it with :func:`medseg.config.loader.load_config` (defaults <- YAML <- ``--set
section.key=value``). Training saves it resolved as ``config.yaml`` in the run folder and embeds it
in every checkpoint; ``medseg infer`` starts from the model's saved config, and ``evaluate`` and
``report`` from the config that the step before them wrote, so settings chosen at training time
(``infer.overlap``, ``evaluate.lesion_labels`` ...) carry through unless the command line overrides them.
"""

from __future__ import annotations

from pydantic import Field

from medseg.config.section import Section
from medseg.data.config import FingerprintConfig, PlanConfig, PreprocessConfig
from medseg.data.synthetic import SynthConfig
from medseg.infer.config import InferConfig
from medseg.losses.config import LossConfig
from medseg.metrics.config import EvaluateConfig
from medseg.models.config import ModelConfig
from medseg.report.config import ReportConfig
from medseg.train.config import TrainConfig
from medseg.transforms.config import AugmentConfig


class RunConfig(Section):
    """Every setting of a medseg run, one section per pipeline stage."""

    dataset: str | None = Field(None, description="raw dataset folder (MSD or nnU-Net layout) or a preprocessed cache; `medseg train CONFIG.yaml` reads it from here")
    work_dir: str | None = Field(None, description="where plans and the preprocessed cache go [default: medseg_work/<dataset name>]")
    run_dir: str | None = Field(None, description="training output folder [default: runs/<dataset name>/<configuration>]; folds go to fold_<k> inside")
    fingerprint: FingerprintConfig = Field(default_factory=FingerprintConfig)
    plan: PlanConfig = Field(default_factory=PlanConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    infer: InferConfig = Field(default_factory=InferConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)

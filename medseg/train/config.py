"""``train:`` config section. Every optimisation hyperparameter is a field here, so one trainer
serves every variant (no subclass per epoch count)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medseg.config import Section


class TrainConfig(Section):
    configuration: Literal["3d", "2d"] = Field("3d", description="which plan configuration to train")
    fold: int = Field(0, ge=0, description="cross-validation fold to hold out for validation")
    num_folds: int = Field(5, ge=2)
    split_seed: int = Field(12345, description="seed of the deterministic k-fold split")
    epochs: int = Field(100, ge=1)
    iterations_per_epoch: int = Field(250, ge=1)
    batch_size: int | None = Field(None, ge=1, description="None = the plan's batch size")
    patch_size: list[int] | None = Field(None, description="None = the plan's patch size")
    max_minutes: float | None = Field(None, gt=0, description="time budget; the LR schedule follows whichever of time or epochs runs out first")
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.99, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(3e-5, ge=0)
    schedule: Literal["poly", "cosine"] = Field("poly", description="poly (nnU-Net, with sgd) or warmup+cosine (with adamw)")
    poly_exponent: float = 0.9
    warmup_fraction: float = Field(0.02, ge=0, lt=1, description="share of training spent warming up (cosine schedule)")
    min_lr_fraction: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(12.0, gt=0)
    foreground_share: float = Field(1 / 3, ge=0, le=1, description="share of each batch forced to contain foreground")
    amp: Literal["auto", "bf16", "fp16", "off"] = Field("auto", description="auto = bf16 on CUDA if supported, else fp16 on CUDA, off on CPU")
    compile: bool = Field(False, description="torch.compile the network")
    num_workers: int | None = Field(None, ge=0, description="data loader processes; None = 0 on CPU, min(8, cores-1) on CUDA")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch; None = all cores")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    seed: int = 0
    val_every: int = Field(5, ge=1, description="epochs between full-volume validations")
    val_max_cases: int | None = Field(None, ge=1, description="validate on at most this many cases (None = all of the fold)")
    val_overlap: float = Field(0.5, ge=0, lt=1)
    val_sw_batch_size: int = Field(4, ge=1)
    ema_alpha: float = Field(0.9, ge=0, lt=1, description="smoothing of the per-validation Dice used to pick the best checkpoint")
    checkpoint_every: int = Field(1, ge=1, description="epochs between 'last' checkpoints (resume points)")
    tensorboard: bool = True

"""``train:`` config section. Every optimisation hyperparameter is a field here, so one trainer
serves every variant (no subclass per epoch count)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from medseg.config import Section, yaml_switch


class TrainConfig(Section):
    configuration: str = Field("3d", description="plan configuration to train: 3d (the plan's default 3D: 3d_fullres on a GPU, "
                               "3d_lowres on a CPU when the plan has one), 3d_fullres, 3d_lowres or 2d")
    fold: int | Literal["all"] = Field(0, description="cross-validation fold to hold out for validation, or 'all' to train on every case "
                                       "(nnU-Net's meaning; validation then runs on training cases and says so)")
    num_folds: int = Field(5, ge=2)
    split_seed: int = Field(12345, description="seed of the deterministic k-fold split")
    split_group: str | None = Field(None, description="regular expression naming each case's group (its first capture group, else the "
                                    "whole match), e.g. the patient of LIDC's <patient>_R_<nodule> with '^(.*)_R_': every group lands in "
                                    "one fold, so the folds are patient-disjoint. None: cases are dealt one by one (the folds as before)")
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
    amp: Literal["auto", "bf16", "fp16", "off"] = Field("auto", description="auto = bf16 on CUDA if supported, else fp16 on CUDA; on a CPU bf16 where it has AMX (a step of the new-user CPU plan: 0.145 s instead of 0.297 s on a 2-core AMX Xeon), else off. Full-volume validation predicts at infer.amp, the precision medseg infer uses for the run")
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="torch.compile the training network; auto = on CUDA (1.8x per step on a 128^3 plan on an H200 after ~30 s of "
        "compiling: reports/gpu_benchmark.md), off on CPU (minutes of compiling on a small CPU; time it there with "
        "python -m medseg.bench.train_options). If compiling fails, training goes on eagerly")
    channels_last: bool = Field(False, description="channels_last_3d memory format for 3D networks (0.76x as fast on an H200: reports/gpu_benchmark.md)")
    fused_optimizer: Literal["auto", "on", "off"] = Field("auto", description="torch's fused optimizer kernels; auto = on CUDA, off on CPU (foreach)")
    num_workers: int | None = Field(None, ge=0, description="data loader processes; None = derived from the cores (CUDA: cores-1 up to 12; CPU: a quarter of the cores)")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch; None = this process's share of the cores, minus loader workers")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    deterministic: bool = Field(False, description="deterministic GPU kernels (cuDNN/cuBLAS): a resumed run equals an uninterrupted one bit for bit on CUDA too, somewhat slower")
    seed: int = 0
    val_every: int = Field(5, ge=1, description="epochs between full-volume validations (on at most val_max_cases cases)")
    val_max_cases: int | None = Field(8, ge=1, description="full-volume validation during training uses at most this many cases; the final one uses every case")
    val_patch_batches: int = Field(4, ge=0, description="batches of fixed validation patches scored every epoch on the device (patch Dice); 0 = off")
    val_overlap: float = Field(0.5, ge=0, lt=1)
    val_sw_batch_size: int | None = Field(None, ge=1, description="windows per call in full-volume validation; None = as `medseg infer` on this device")
    ema_alpha: float = Field(0.9, ge=0, lt=1, description="smoothing of the per-validation Dice used to pick the best checkpoint")
    checkpoint_every: int | None = Field(None, ge=1, description="also write the resume checkpoint every this many epochs (None: by time only)")
    checkpoint_minutes: float = Field(5.0, gt=0, description="write the resume checkpoint (checkpoint_last.pt) when this much time passed since the last one, and at the end")
    tensorboard: bool = True
    init_from: str | None = Field(
        None, description="fine-tune: start from the weights of this checkpoint (.pt), fold folder or run folder (its best, else last "
        "checkpoint; of several folds, fold_all, else the lowest fold). Every weight whose name and shape match loads into the network "
        "of this run's plan; the rest (e.g. output heads for another label set) stays freshly initialised. Ignored by --resume, "
        "whose checkpoint already holds the fine-tuned weights. The report goes to init_from.json and summary.json")
    freeze_encoder_epochs: int = Field(
        0, ge=0, description="keep the encoder's parameters fixed (no gradient, no update, no weight decay) for the first N epochs, "
        "then train everything; the encoder is the registered model's (dynunet: input_block, downsamples, bottleneck; segresnet: "
        "encoder; others: every parameter before the first upsampling module). Meant for use with init_from")

    @field_validator("fused_optimizer", "compile", "amp", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object, info: ValidationInfo) -> object:
        return yaml_switch(value, on_means_on=info.field_name != "amp")

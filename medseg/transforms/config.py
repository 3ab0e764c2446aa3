"""The ``augment:`` config section, apart from the MONAI transforms that use it, so reading a config needs no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medseg.config import Section


class AugmentConfig(Section):
    """Every probability and range of the augmentation pipeline."""

    enabled: bool = True
    rotation_prob: float = Field(0.2, ge=0, le=1)
    rotation_degrees: float = Field(30.0, ge=0, le=180, description="max |angle| per rotated axis")
    rotation_axes: Literal["auto", "all", "in_plane"] = Field(
        "auto", description="in_plane rotates about the slice axis only; auto picks in_plane for anisotropic 3D data"
    )
    scale_prob: float = Field(0.2, ge=0, le=1)
    scale_range: tuple[float, float] = (0.7, 1.4)
    spatial_margin: float = Field(1.25, ge=1.0, description="sampled patch is this much larger before rotation/scaling crops it")
    elastic_prob: float = Field(0.0, ge=0, le=1)
    elastic_sigma: tuple[float, float] = (9.0, 13.0)
    elastic_magnitude: tuple[float, float] = (0.0, 200.0)
    mirror_prob: float = Field(0.5, ge=0, le=1, description="per axis")
    mirror_axes: list[int] | None = Field(None, description="spatial axes to mirror; None = all")
    noise_prob: float = Field(0.1, ge=0, le=1)
    noise_std: float = 0.1
    blur_prob: float = Field(0.2, ge=0, le=1)
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness_prob: float = Field(0.15, ge=0, le=1)
    brightness_range: tuple[float, float] = (0.75, 1.25)
    contrast_prob: float = Field(0.15, ge=0, le=1)
    contrast_range: tuple[float, float] = (0.75, 1.25)
    lowres_prob: float = Field(0.25, ge=0, le=1)
    lowres_zoom: tuple[float, float] = (0.5, 1.0)
    gamma_prob: float = Field(0.3, ge=0, le=1)
    gamma_range: tuple[float, float] = (0.7, 1.5)
    modality_dropout_prob: float = Field(
        0.0, ge=0, le=1, description="per sample, zero a random non-empty strict subset of the image channels (modalities; "
        "never all), to train for inference with a modality missing (medseg infer --missing-modality); 0 = off"
    )

    def uses_spatial_resampling(self) -> bool:
        return self.enabled and (self.rotation_prob > 0 or self.scale_prob > 0)

"""The ``augment:`` config section, apart from the MONAI transforms that use it, so reading a config needs no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medseg.config import Section


class AugmentConfig(Section):
    """Every probability and range of the augmentation pipeline; the defaults are nnU-Net v2's.

    Intensity transforms fire per sample with ``*_prob`` and then, where nnU-Net does, per channel with
    ``*_channel_prob``; factors are drawn per channel.
    """

    enabled: bool = True
    rotation_prob: float = Field(0.2, ge=0, le=1)
    rotation_degrees: float | None = Field(
        None, ge=0, le=180, description="max |angle| per rotated axis; None = nnU-Net's: 30 in 3D, 180 in-plane (thick slices) "
        "and in 2D, 15 for 2D patches longer than 1.5:1"
    )
    rotation_axes: Literal["auto", "all", "in_plane"] = Field(
        "auto", description="in_plane rotates about the slice axis only (and scales in-plane only, as nnU-Net's dummy-2D "
        "augmentation); auto picks in_plane for anisotropic 3D data"
    )
    scale_prob: float = Field(0.2, ge=0, le=1)
    scale_range: tuple[float, float] = (0.7, 1.4)
    spatial_margin: float | None = Field(
        None, ge=1.0, description="sampled patch is this much larger before rotation/scaling crops it; None = nnU-Net's "
        "initial patch size (the patch turned by the largest angle, divided by 0.85)"
    )
    elastic_prob: float = Field(0.0, ge=0, le=1)
    elastic_sigma: tuple[float, float] = (9.0, 13.0)
    elastic_magnitude: tuple[float, float] = (0.0, 200.0)
    mirror_prob: float = Field(0.5, ge=0, le=1, description="per axis")
    mirror_axes: list[int] | None = Field(None, description="spatial axes to mirror; None = all")
    noise_prob: float = Field(0.1, ge=0, le=1)
    noise_std: float = Field(0.1, ge=0, description="noise standard deviation drawn from U(0, noise_std) per sample (nnU-Net "
                             "calls it noise_variance but uses the draw as the standard deviation)")
    blur_prob: float = Field(0.2, ge=0, le=1)
    blur_channel_prob: float = Field(0.5, ge=0, le=1, description="per channel, once blur_prob fired; sigma drawn per channel and axis")
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness_prob: float = Field(0.15, ge=0, le=1)
    brightness_range: tuple[float, float] = (0.75, 1.25)
    contrast_prob: float = Field(0.15, ge=0, le=1)
    contrast_range: tuple[float, float] = (0.75, 1.25)
    lowres_prob: float = Field(0.25, ge=0, le=1)
    lowres_channel_prob: float = Field(0.5, ge=0, le=1, description="per channel, once lowres_prob fired")
    lowres_zoom: tuple[float, float] = (0.5, 1.0)
    inverted_gamma_prob: float = Field(0.1, ge=0, le=1, description="gamma applied to the negated image, negated back: "
                                       "bends intensities from the bright end")
    gamma_prob: float = Field(0.3, ge=0, le=1)
    gamma_range: tuple[float, float] = (0.7, 1.5)
    modality_dropout_prob: float = Field(
        0.0, ge=0, le=1, description="per sample, zero a random non-empty strict subset of the image channels (modalities; "
        "never all), to train for inference with a modality missing (medseg infer --missing-modality); 0 = off"
    )

    def uses_spatial_resampling(self) -> bool:
        return self.enabled and (self.rotation_prob > 0 or self.scale_prob > 0)

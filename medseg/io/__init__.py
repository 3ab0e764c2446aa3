"""Reading and writing medical volumes with exact world geometry. No torch here, on purpose."""

from medseg.io.geometry import affine_from_lps, lps_from_affine, orientation_code
from medseg.io.readers import read_volume, write_label_map, write_volume
from medseg.io.volume import Volume

__all__ = [
    "Volume",
    "affine_from_lps",
    "lps_from_affine",
    "orientation_code",
    "read_volume",
    "write_label_map",
    "write_volume",
]

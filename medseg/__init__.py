"""medseg: medical image segmentation, from DICOM/NIfTI in to geometry-exact masks and clinical reports out."""

__version__ = "0.1.0"

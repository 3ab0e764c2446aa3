"""On-the-fly training augmentation (MONAI transforms, configured entirely from config fields)."""

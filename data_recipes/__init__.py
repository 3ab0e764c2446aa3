"""Dataset download recipes (YAML), shipped inside medseg as the package data of ``medseg.data_recipes``."""

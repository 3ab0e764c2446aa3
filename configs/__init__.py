"""Example configs (YAML), shipped inside medseg as the package data of ``medseg.configs`` (the demo reads synthetic.yaml)."""

"""Datasets: raw layouts, the built-in synthetic set, public-dataset recipes, planning and preprocessing."""

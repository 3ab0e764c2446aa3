"""Packaging detail pyproject.toml cannot express: the dataset recipes (data_recipes/) and example
configs (configs/) live at the top of the repository, where users look for them, and ship inside the
package as ``medseg.data_recipes`` and ``medseg.configs``, so a wheel install has them too."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["medseg", "medseg.*"]) + ["medseg.data_recipes", "medseg.configs"],
    package_dir={"medseg.data_recipes": "data_recipes", "medseg.configs": "configs"},
    package_data={"medseg": ["py.typed"], "medseg.data_recipes": ["*.yaml"], "medseg.configs": ["*.yaml"]},
)

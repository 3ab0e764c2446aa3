"""Base class of every config section (each section is owned by the module that uses it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Unknown keys are errors and values are validated on assignment, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def yaml_switch(value: object, on_means_on: bool = True) -> object:
    """YAML 1.1 reads unquoted on/off as booleans: give switches their words back ("off"; "on" where that is a
    valid choice, else the boolean stays and the field's own validation names the valid words)."""
    if value is False:
        return "off"
    return "on" if value is True and on_means_on else value

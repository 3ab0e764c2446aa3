"""Base class of every config section (each section is owned by the module that uses it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Unknown keys are errors and values are validated on assignment, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

"""The base of every config section, in a module of its own so that section
modules can import it without importing each other (``sections.py`` uses the
provider tables of ``providers.py``, which subclass this).  ``sections._Section``
is the same class, re-exported."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

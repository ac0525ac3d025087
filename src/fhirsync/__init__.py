"""fhirsync: OpenMRS Sync 2.0 in Python (Atom feeds, FHIR R4, REST, pull and push)."""

from __future__ import annotations

__version__ = "0.1.0"

"""``python -m fhirsync`` runs the command line."""

from __future__ import annotations

from fhirsync.cli.main import main

main()

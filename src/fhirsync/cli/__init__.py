"""The ``fhirsync`` command line: one module per command group.

Every command is registered at start-up (Typer reads the signatures for parsing and help), so a
command module imports at its top only what its signatures need: typer, rich and ``cli.common``.
Each command imports its work (the node, the store, the sync engine, the server) inside its own
body; otherwise every command would pay for every other one's imports (FastAPI, Alembic, the FHIR
models, the demo network: about a second in all). ``tests/unit/cli/test_startup.py`` keeps
``import fhirsync.cli.main`` free of FastAPI, uvicorn and Alembic; ``bench/startup.py`` times it.
"""

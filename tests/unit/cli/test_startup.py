"""Start-up of the command line: loading it does not load the server, the demo or migrations.

Every command module is imported to build the command line, so whatever one of them imports at
its top every command pays for (bench/startup.py prints the time; this asserts what is loaded).
"""

from __future__ import annotations

import json
import subprocess
import sys

from fhirsync.cli.data import IMPORT_BATCH_SIZE
from fhirsync.service import importer

HEAVY = ("fastapi", "starlette", "uvicorn", "alembic", "argon2")


def _loaded_after(code: str) -> list[str]:
    """The HEAVY packages in sys.modules after running ``code`` in a fresh interpreter."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps(sorted(set({HEAVY!r}) & set(sys.modules))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_importing_the_command_line_loads_no_server_nor_alembic() -> None:
    assert _loaded_after("import fhirsync.cli.main\nfhirsync.cli.main.build_app()") == []


def test_the_audit_helpers_the_cli_shares_with_the_admin_page_load_no_server() -> None:
    assert _loaded_after("import fhirsync.server.audit_view") == []


def test_the_import_option_default_is_the_importer_batch_size() -> None:
    # The option's default is written out so that --help does not load the importer.
    assert IMPORT_BATCH_SIZE == importer.BATCH_SIZE

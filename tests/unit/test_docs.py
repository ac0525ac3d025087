"""The README's command and settings reference is generated (cog) and must be current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fhirsync.settings import NodeSettings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_has_help_text() -> None:
    missing = [n for n, f in NodeSettings.model_fields.items() if not f.description]
    assert missing == []


def test_readme_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cogapp", "--check", str(ROOT / "README.md")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, (
        "README is stale: run `.venv/bin/cog -r README.md`\n" + result.stdout + result.stderr
    )


def test_readme_shows_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text

"""A self-signed certificate for 127.0.0.1, made with the ``openssl`` command (tests only)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def openssl_available() -> bool:
    """True when the ``openssl`` command is installed (``.ci/run`` installs it)."""
    return shutil.which("openssl") is not None


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files in ``directory``, valid one day for 127.0.0.1."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key

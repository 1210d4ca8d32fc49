"""Shared fixtures: a throw-away qmail root, and (from fixtures_slapd) a real OpenLDAP server."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT_DIR / "tools"))

pytest_plugins = ["tests.fixtures_slapd"]

# Hypothesis's defaults include a 200 ms deadline per example and a health check on slow data
# generation: timing thresholds that fail on a loaded machine without saying anything about the code.
settings.register_profile("qldap", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("qldap")


class QRoot:
    """A qmail root in a temp dir: ``control/``, ``queue/``, ``alias/``, ``users/``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.control_dir = path / "control"
        for sub in ("control", "alias", "users"):
            (path / sub).mkdir(parents=True, exist_ok=True)

    def control(self, name: str, text: str | bytes | None) -> Path:
        """Write (or with None remove) control file *name*; a str gets a final newline if missing."""
        p = self.control_dir / name
        if text is None:
            p.unlink(missing_ok=True)
            return p
        if isinstance(text, str):
            data = (text if text.endswith("\n") or text == "" else text + "\n").encode()
        else:
            data = text
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, p)
        return p


@pytest.fixture
def qroot(tmp_path: Path) -> QRoot:
    """A fresh root whose ``control/me`` is ``mx1.example.com``."""
    root = QRoot(tmp_path / "qmail")
    root.control("me", "mx1.example.com")
    return root

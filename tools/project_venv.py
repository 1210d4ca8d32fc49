"""Re-run a tools/ script under the project's .venv interpreter when started with another Python.

Why: the tools start qldap daemons with ``sys.executable``; run as ``tools/faults`` through
``#!/usr/bin/env python3`` they would get a Python without qldap's dependencies (dnspython, pyyaml …).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def ensure() -> None:
    """Exec the same script under ``<repo>/.venv/bin/python`` unless already running there."""
    venv = Path(__file__).resolve().parent.parent / ".venv"
    python = venv / "bin" / "python"
    if not python.exists() or Path(sys.prefix).resolve() == venv.resolve():
        return
    os.execv(str(python), [str(python), *sys.argv])

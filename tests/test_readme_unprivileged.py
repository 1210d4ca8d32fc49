"""The README's two set-up commands, verbatim, by an unprivileged user on a fresh copy of the tree.

Why: CI runs them as root (.ci/run); a newcomer usually is not root.  Root-only branches (apt-get
without sudo, files created as root, ports below 1024) would pass CI and fail for them.  This runs
``./tools/demo`` and ``./tools/test`` as the system user ``nobody`` in a copy that user owns, with
HOME and TMPDIR inside it, so nothing outside the copy is written and the copy is removed afterwards.
It needs root to switch users (runuser), so it runs in CI and wherever the suite runs as root.

The ``sudo`` branch (a missing Debian package installed through sudo) needs a machine without the
packages; docs/install.md describes that manual check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_readme import setup_commands

REPO = Path(__file__).resolve().parent.parent
USER = "nobody"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged user needs root"),
]


@pytest.fixture
def fresh_copy() -> Iterator[Path]:
    """The tree as a clean clone has it (no venv, no caches), owned by the unprivileged user."""
    base = Path(tempfile.mkdtemp(prefix="qldap-readme-user-", dir="/tmp"))
    base.chmod(0o755)
    tree = base / "qldap"
    shutil.copytree(REPO, tree, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "tmp"))  # fmt: skip
    subprocess.run(["chown", "-R", f"{USER}:", str(base)], check=True, timeout=60)
    yield tree
    shutil.rmtree(base, ignore_errors=True)


def _as_user(tree: Path, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k in ("LANG", "http_proxy",
                                                                                 "https_proxy")}  # fmt: skip
    env.update(HOME=str(tree.parent), TMPDIR=str(tree.parent), PATH="/usr/local/bin:/usr/bin:/bin")
    argv = ["runuser", "-u", USER, "--", "env", *(f"{k}={v}" for k, v in env.items()), command, *args]
    return subprocess.run(argv, cwd=tree, capture_output=True, text=True, timeout=1800, check=False)


def test_readme_setup_commands_work_for_an_unprivileged_user(fresh_copy: Path) -> None:
    assert setup_commands() == ["./tools/demo", "./tools/test"]
    demo = _as_user(fresh_copy, "./tools/demo")
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "qldap demo: delivered to " in demo.stdout
    assert f"rm -rf {fresh_copy.parent}/qldap-demo-" in demo.stdout  # the demo root went to TMPDIR
    assert (fresh_copy / ".venv" / "bin" / "qldap").stat().st_uid != 0  # the venv belongs to the user
    # ./tools/test verbatim, with a short pytest selection: the set-up path (install-deps --check,
    # venv, pip, man pages, ruff, mypy) is what differs for a user; the suite itself runs in CI
    test = _as_user(fresh_copy, "./tools/test", "tests/test_readme.py")
    assert test.returncode == 0, test.stdout[-3000:] + test.stderr[-3000:]
    assert "== ruff" in test.stdout and "== mypy" in test.stdout and " passed" in test.stdout

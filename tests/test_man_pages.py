"""The manual pages in man/ are the contract the code cites: one page per program, every control file
documented, every cross reference resolvable, and `man NAME` working from the project venv.

Why `man -w` against the venv: man-db finds pages through ``../man`` and ``../share/man`` of each PATH
entry, and an editable install copies no data files, so tools/link-man links ``.venv/man`` to ``man/``; this
test is what proves that the README's "`. .venv/bin/activate`, then `man qmail-smtpd`" works.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from qldap.cli.qldap import DAEMONS, DELEGATED
from qldap.control.known import ENTRIES

REPO = Path(__file__).resolve().parent.parent
MAN = REPO / "man"
PAGES = sorted(p for p in MAN.glob("man[158]/*.[158]"))


def _scripts() -> list[str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return sorted(data["project"]["scripts"])


def _page(name: str) -> Path | None:
    for section in ("8", "1", "5"):
        p = MAN / f"man{section}" / f"{name}.{section}"
        if p.exists():
            return p
    return None


def _target(page: Path) -> Path:
    """The file a ``.so`` page stands for (itself otherwise)."""
    first = page.read_text().split("\n", 1)[0]
    return MAN / first[4:].strip() if first.startswith(".so ") else page


def _man_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "MANOPT")}
    env["PATH"] = f"{Path(sys.prefix) / 'bin'}:/usr/bin:/bin"
    env["MANWIDTH"] = "250"  # wide: no line breaks inside the reply texts
    return env


def _need_man() -> str:
    man = shutil.which("man")
    if man is None:
        if os.environ.get("QLDAP_REQUIRE_SLAPD") == "1":
            pytest.fail("man (man-db) is not installed; tools/install-deps installs it", pytrace=False)
        pytest.skip("man (man-db) is not installed")
    return man


@pytest.mark.parametrize("script", _scripts())
def test_every_console_script_has_a_page(script: str) -> None:
    page = _page(script)
    assert page is not None, f"no man/man[18]/{script}.[18]"
    target = _target(page)
    assert target.exists(), f"{page} points at missing {target}"
    names = target.read_text().split(".SH NAME\n", 1)[1].split("\\-", 1)[0]
    assert script.replace("-", "\\-") in names or script in names, f"{target} NAME line lacks {script}"


@pytest.mark.parametrize("command", [*DAEMONS, *DELEGATED, "init", "demo"])
def test_every_qldap_subcommand_is_documented(command: str) -> None:
    commands = (MAN / "man8" / "qldap.8").read_text().split(".SH COMMANDS\n", 1)[1].split("\n.SH ", 1)[0]
    items = [block.split("\n", 1)[0] for block in commands.split(".TP\n")[1:]]
    assert any(re.search(rf"\b{command}\b", item) for item in items), f"qldap(8) COMMANDS lacks {command}"
    if command in DAEMONS:
        pages = [p for p in PAGES if f"qldap {command}" in p.read_text().split(".SH SYNOPSIS", 1)[0]]
        assert pages, f"no page names `qldap {command}` in its NAME section"


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_every_control_file_is_in_qldap_control(entry: object) -> None:
    text = (MAN / "man5" / "qldap-control.5").read_text()
    name = entry.name.replace("-", "\\-")  # type: ignore[attr-defined]
    assert f"\n.B {name}\n" in text, f"control/{entry.name} is not documented in qldap-control(5)"  # type: ignore[attr-defined]


def test_cross_references_resolve() -> None:
    missing = []
    for page in PAGES:
        for name, section in re.findall(r"^\.BR ([\w.\-\\]+) \((\d)\)", page.read_text(), re.M):
            name = name.replace("\\-", "-")
            if not (MAN / f"man{section}" / f"{name}.{section}").exists():
                missing.append(f"{page.name}: {name}({section})")
    assert not missing


def test_pages_render_without_warnings() -> None:
    _need_man()
    bad = {}
    for page in PAGES:
        if page.read_text().startswith(".so "):
            continue
        proc = subprocess.run(["man", "--warnings", "-l", str(page)], env=_man_env(),
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        if proc.returncode != 0 or proc.stderr.strip():
            bad[page.name] = proc.stderr.strip() or f"exit {proc.returncode}"
    assert not bad


@pytest.mark.parametrize("name", ["qmail-smtpd", "qldap-control", "qmail-tcpok", "mailq"])
def test_man_finds_the_pages_through_the_venv(name: str) -> None:
    _need_man()
    where = subprocess.run(["man", "-w", name], env=_man_env(), capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, (
        f"`man -w {name}` with {sys.prefix}/bin on PATH failed: {where.stderr.strip()} "
        "(an editable install needs tools/link-man)"
    )
    found = Path(where.stdout.strip()).resolve()
    page = _page(name)
    assert page is not None
    venv_pages = {(Path(sys.prefix) / sub).resolve() for sub in ("man", "share/man")}  # .so: the target
    assert found == page.resolve() or found.parent.parent in venv_pages


def test_man_qmail_smtpd_shows_the_rcpt_checks() -> None:
    _need_man()
    out = subprocess.run(["man", "qmail-smtpd"], env=_man_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # justified and wrapped: compare with blanks collapsed
    assert "RCPT CHECKS" in text
    assert "553 sorry, relaying denied from your location [ip] (#5.7.1)" in text


@pytest.mark.slow
def test_man_qmail_smtpd_works_after_a_regular_install(tmp_path: Path) -> None:
    """The wheel carries the pages as data files: after ``pip install`` (not editable, no tools/link-man)
    ``man qmail-smtpd`` finds the installed copy through the install's bin directory on PATH."""
    _need_man()
    src = tmp_path / "src"  # build from a copy: an in-tree build would leave build/ in the checkout
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "tmp"))  # fmt: skip
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("qldap-*.whl")
    # a venv of its own: pip installing into this interpreter (even with --prefix) would first
    # uninstall the editable qldap the test run itself uses
    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "venv", str(prefix)], check=True, capture_output=True, timeout=600)
    subprocess.run([str(prefix / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "install",
                    "--no-deps", "--no-index", "-q", str(wheel)], check=True, capture_output=True,
                   timeout=600)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "MANOPT")}
    env.update(PATH=f"{prefix / 'bin'}:/usr/bin:/bin", MANWIDTH="250", HOME=str(tmp_path))
    where = subprocess.run(["man", "-w", "qmail-smtpd"], env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()) == prefix / "share" / "man" / "man8" / "qmail-smtpd.8"
    page = subprocess.run(["man", "qmail-smtpd"], env=env, capture_output=True, text=True, timeout=60)
    assert page.returncode == 0 and "RCPT CHECKS" in page.stdout, page.stderr

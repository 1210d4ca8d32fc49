"""Code, tests and documents cite the project's own manual pages, never documents outside the repository.

Why: a newcomer reading ``qldap/`` must be able to open what a comment points at.  The behaviour spec
the project was first written against is not part of the repository, so a citation like "smtpd spec,
section 2.2" is a dead link; ``qmail-smtpd(8), MAIL CHECKS`` is a page ``man`` opens after install.
"""

from __future__ import annotations

import re
from pathlib import Path

from qldap.control.known import ENTRIES

REPO = Path(__file__).resolve().parent.parent
#: A reference to one of the external spec documents, or a section sign of any kind.
FOREIGN = re.compile(r"\b(smtpd|delivery|queue|services)\.md\b|§")
#: A citation of one of the project's own pages, e.g. qmail-smtpd(8), qldap-control(5), digest(1).
OWN_PAGE = re.compile(
    r"\b((?:qmail|qldap|pbs|auth)[a-z_.-]*|digest|sendmail|mailq|newaliases)(?:\\)?\(([158])\)"
)


def _texts() -> list[Path]:
    files: list[Path] = [REPO / "README.md"]
    for top in ("qldap", "tools", "tests", "man", "docs"):
        for path in sorted((REPO / top).rglob("*")):
            if path.is_file() and path.suffix not in (".pyc", ".cdb", ".der", ".pem", ".key"):
                files.append(path)
    return [p for p in files if p.resolve() != Path(__file__).resolve()]


def test_no_citation_of_documents_outside_the_repository() -> None:
    offenders = []
    for path in _texts():
        text = path.read_text(errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            if FOREIGN.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()[:100]}")
    assert len(_texts()) > 100  # the walk itself found the tree
    # cite a manual page instead ("qmail-smtpd(8), MAIL CHECKS"), and write "RFC 6376 section 5.4.1"
    assert offenders == []


#: A numbered acceptance check of that external spec ("Acceptance 43", "checks 22-27"): a test says what
#: it checks instead.
NUMBERED_CHECK = re.compile(r"\b([Aa]cceptance|[Cc]hecks?)( checks?)? \d")


def test_tests_describe_their_checks_instead_of_numbering_them() -> None:
    offenders = []
    for path in _texts():
        if path.suffix != ".py" or not path.is_relative_to(REPO / "tests"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if NUMBERED_CHECK.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()[:100]}")
    assert offenders == []


def test_the_guard_recognises_what_it_forbids() -> None:
    for bad in ("see smtpd.md", "(queue.md)", "delivery.md, forward-only", "services.md", "RFC 4511 §4.2"):
        assert FOREIGN.search(bad), bad
    for good in ("qmail-smtpd(8), MAIL CHECKS", "docs/install.md", "RFC 4511 section 4.2", "smtpd_md"):
        assert not FOREIGN.search(good), good
    for bad in ('"""Acceptance 43."""', "# check 29", "checks 22–27", "acceptance checks 1-6"):
        assert NUMBERED_CHECK.search(bad), bad
    assert not NUMBERED_CHECK.search("the MAIL checks of qmail-smtpd(8)")


def test_every_cited_project_page_exists() -> None:
    """Code, tests and pages cite pages of this project; docs/ may also name upstream qmail pages
    (docs/conformance.md compares with the C programs and their own manuals)."""
    missing = set()
    for path in _texts():
        if path.is_relative_to(REPO / "docs"):
            continue
        for name, section in OWN_PAGE.findall(path.read_text(errors="replace")):
            if not (REPO / "man" / f"man{section}" / f"{name}.{section}").is_file():
                missing.add(f"{name}({section}) in {path.relative_to(REPO)}")
    assert missing == set()


def test_control_registry_names_existing_manual_pages() -> None:
    for entry in ENTRIES:
        m = re.fullmatch(r"([a-z_.-]+)\(([158])\)", entry.manual)
        if m is None:  # a document in the repository instead of a page
            assert (REPO / entry.manual).is_file(), (entry.name, entry.manual)
        else:
            assert (REPO / "man" / f"man{m[2]}" / f"{m[1]}.{m[2]}").is_file(), (entry.name, entry.manual)

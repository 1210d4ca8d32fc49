"""README.md is run verbatim by CI and must match the code: its set-up block, layout and page tables.

Why a test: a newcomer follows the README literally; a set-up block with a third command, a layout
row naming a moved module, or a manual page that does not exist is found here rather than by them.
.ci/run executes the set-up block line by line, so these lines are also what CI runs.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def setup_commands() -> list[str]:
    """The commands of the README's first ```sh block, comments removed (what .ci/run runs)."""
    block = README.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def _table(title: str) -> list[list[str]]:
    section = README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]  # header, separator
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def test_the_setup_block_is_exactly_two_commands_without_sudo() -> None:
    commands = setup_commands()
    assert commands == ["./tools/demo", "./tools/test"]
    assert not any("sudo" in c for c in commands)
    for command in commands:
        assert (REPO / command).stat().st_mode & 0o111, f"{command} is not executable"


def test_ci_runs_the_readme_setup_block() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert "README.md" in ci  # the commands are read from the README, not copied into the script
    assert not re.search(r"^\s*(exec\s+)?(bash\s+)?\.?/?tools/(test|demo)\b", ci, re.M)


def test_layout_table_names_only_existing_paths_and_every_package() -> None:
    named: set[Path] = set()
    for row in _table("Layout"):
        base: Path | None = None
        for item in re.findall(r"`([^`]+)`", row[0]):
            path = REPO / item if "/" in item or base is None else base / item
            if "/" in item:
                base = path.parent  # later bare names are siblings of this one
            assert path.exists(), f"README layout names {item!r}, which does not exist"
            named.add(path.resolve())
    for entry in (REPO / "qldap").iterdir():
        if entry.name.startswith(("_", ".")) or entry.name in ("py.typed",):
            continue
        if (entry.is_dir() and (entry / "__init__.py").exists()) or entry.suffix == ".py":
            assert entry.resolve() in named, f"qldap/{entry.name} is missing from the README layout table"


def test_manual_page_table_names_existing_pages() -> None:
    for row in _table("Manual pages"):
        for name, section in re.findall(r"`([\w.-]+)\((\d)\)`", row[0]):
            assert (REPO / "man" / f"man{section}" / f"{name}.{section}").exists(), f"{name}({section})"

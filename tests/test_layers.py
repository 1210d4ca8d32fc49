"""The layer rules of docs/architecture.md, checked on every module's imports (parsed, not imported).

Why parse instead of import: a lazy ``import`` inside a function is as much a dependency as one at
the top, and importing every module would run their side effects.  Every ``import``/``from``
statement anywhere in a module counts, ``TYPE_CHECKING`` blocks included.

A failure names the file, the line, the import and the rule it breaks, so the fix is either moving
the shared piece down a layer or (after review) changing the table here *and* in the document.
"""

from __future__ import annotations

import ast
import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "qldap"
DOC = ROOT / "docs" / "architecture.md"

CORE = frozenset(
    {"address", "dates", "errors", "exitcodes", "fsutil", "logs", "metrics", "records", "reports", "sdnotify"}
    | {"workers", "lanes"}
)
"""Top-level modules below every package; they import only each other."""

ALLOWED: dict[str, frozenset[str]] = {
    "control": frozenset(),
    "passwords": frozenset(),
    "directory": frozenset({"control", "passwords"}),
    "queue": frozenset({"control"}),
    "pbs": frozenset({"control"}),
    "remote": frozenset({"control", "queue"}),
    "auth": frozenset({"control", "directory", "passwords"}),
    "group": frozenset({"control", "directory", "queue"}),
    "local": frozenset({"control", "directory", "queue", "group", "remote"}),
    "mailauth": frozenset({"control"}),
    "inject": frozenset({"control", "queue", "mailauth"}),
    "smtpd": frozenset({"control", "directory", "queue", "pbs", "passwords", "auth", "mailauth"}),
    "send": frozenset({"control", "queue", "local", "remote", "mailauth"}),
    "pop3": frozenset({"control", "directory", "auth", "pbs", "local", "passwords"}),
    "setup": frozenset({"control", "queue", "passwords"}),
    "supervise": frozenset({"control", "cli"}),
}
"""Package → the qldap packages it may import besides the core modules (``cli`` may import anything)."""

THIRD_PARTY_HOMES = {
    "ldap3": frozenset(),  # no longer a dependency: qldap's own client is qldap.directory.wire
    "prometheus_client": frozenset({"qldap.metrics"}),
    "dkim": frozenset({"qldap.mailauth.dkimsign", "qldap.mailauth.dkimverify", "qldap.mailauth.keys"}),
    "publicsuffixlist": frozenset({"qldap.mailauth.dmarc"}),  # bundled PSL snapshot: no fetch at run time
}
"""A third-party library that only one seam module may import (docs/architecture.md, "one seam")."""


@dataclass(frozen=True)
class Import:
    """One imported qldap module (or third-party top-level name) and where the import is."""

    source: str  # importing module, e.g. qldap.remote.deliver
    target: str  # imported module, e.g. qldap.send.config
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> Iterator[Import]:
    """Every import statement of *path*, resolved to absolute module names."""
    source = module_name(path)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(source, alias.name, path, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module == "qldap":  # from qldap import reports → the module qldap.reports
                for alias in node.names:
                    yield Import(source, f"qldap.{alias.name}", path, node.lineno)
            else:
                yield Import(source, module, path, node.lineno)


@functools.cache
def all_imports() -> tuple[Import, ...]:
    return tuple(imp for path in sorted(PACKAGE.rglob("*.py")) for imp in imports_of(path))


def layer(module: str) -> str:
    """``qldap.remote.deliver`` → ``remote``; a top-level module → its name; ``qldap`` → ``qldap``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def violation(imp: Import) -> str | None:
    """Why *imp* breaks a rule, or None when it is allowed."""
    top = imp.target.split(".")[0]
    homes = THIRD_PARTY_HOMES.get(top)
    if homes is not None and imp.source not in homes:
        who = f"only {', '.join(sorted(homes))}" if homes else "no module"
        return f"{imp.where()}: {who} may import {top}"
    if top != "qldap" or imp.target == "qldap":
        return None
    src, dst = layer(imp.source), layer(imp.target)
    if src == dst or src == "cli" or dst in CORE:
        return None
    if src in CORE:
        core = ", ".join(sorted(CORE))
        return f"{imp.where()}: the core module qldap.{src} may import only core modules ({core})"
    allowed = ALLOWED.get(src)
    if allowed is None:
        return f"{imp.where()}: the package qldap.{src} has no row in the layer table of tests/test_layers.py"
    if dst not in allowed:
        may = ", ".join(sorted(allowed)) or "nothing"
        return f"{imp.where()}: {src} may import only the core modules and {may} (docs/architecture.md)"
    return None


def test_every_import_follows_the_layer_table() -> None:
    problems = [v for imp in all_imports() if (v := violation(imp)) is not None]
    assert not problems, "forbidden imports:\n  " + "\n  ".join(problems)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of *graph* as a closed list of nodes, or None when it is acyclic."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_no_package_cycles() -> None:
    graph: dict[str, set[str]] = {}
    witness: dict[tuple[str, str], Import] = {}
    for imp in all_imports():
        if not imp.target.startswith("qldap.") or imp.target == "qldap":
            continue
        src, dst = layer(imp.source), layer(imp.target)
        if src != dst:
            graph.setdefault(src, set()).add(dst)
            witness.setdefault((src, dst), imp)
    cycle = find_cycle(graph)
    assert cycle is None, "package cycle " + " → ".join(cycle) + ":\n  " + "\n  ".join(
        witness[(a, b)].where() for a, b in itertools.pairwise(cycle)
    )


def test_the_table_itself_has_no_cycle_and_names_real_packages() -> None:
    graph = {src: set(dsts) for src, dsts in ALLOWED.items()}
    assert find_cycle(graph) is None
    real = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} | {
        p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"
    }
    named = set(ALLOWED) | {d for dsts in ALLOWED.values() for d in dsts} | CORE
    assert not named - real, f"the table names packages that do not exist: {sorted(named - real)}"
    missing = sorted(real - named - {"cli"})
    assert not missing, f"packages or modules missing from the table: {missing}"


def test_a_forbidden_import_is_reported_with_its_place() -> None:
    """The checker itself: an upward import (remote → send) and a core import of a package fail."""
    fake = PACKAGE / "remote" / "deliver.py"
    up = violation(Import("qldap.remote.deliver", "qldap.send.config", fake, 62))
    assert up is not None and "qldap/remote/deliver.py:62 imports qldap.send.config" in up
    assert "remote may import only" in up
    core = violation(Import("qldap.address", "qldap.directory.base", PACKAGE / "address.py", 3))
    assert core is not None and "core module qldap.address" in core
    seam = violation(Import("qldap.smtpd.server", "prometheus_client", PACKAGE / "smtpd" / "server.py", 9))
    assert seam is not None and "may import prometheus_client" in seam
    assert violation(Import("qldap.directory.wire", "ldap3", PACKAGE / "directory" / "wire.py", 9))
    assert violation(Import("qldap.send.manager", "qldap.remote.deliver", fake, 1)) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_document_states_the_same_rules() -> None:
    """docs/architecture.md carries the table; each row must match the one checked here."""
    text = DOC.read_text(encoding="utf-8")
    for src, dsts in ALLOWED.items():
        row = f"| `{src}` |"
        assert row in text, f"docs/architecture.md has no layer row for {src}"
        line = next(ln for ln in text.splitlines() if ln.startswith(row))
        cells = [c.strip() for c in line.strip("|").split("|")]
        may = {c.strip("` ") for c in cells[-1].split(",") if c.strip("` ") and c.strip() != "core"}
        assert may == set(dsts), f"docs/architecture.md row {src}: {sorted(may)} != {sorted(dsts)}"


_SPLITTERS = frozenset({"split", "rsplit", "partition", "rpartition", "find", "rfind", "index", "rindex"})


def at_splits(source: str) -> list[int]:
    """Lines of *source* that cut a string at ``"@"`` themselves (``x.rsplit("@", 1)``, ``x.find(b"@")``)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _SPLITTERS
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value in ("@", b"@")
        ):
            lines.append(node.lineno)
    return lines


def test_addresses_are_split_only_by_the_address_module() -> None:
    """One typed address from RCPT to delivery: everyone else asks :mod:`qldap.address` (Address.parse,
    split_address), so the "last @" rule and its edge cases (no @, @ in a quoted local part) live once."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "address.py":
            continue
        for line in at_splits(path.read_text()):
            offenders.append(f"{path.relative_to(ROOT)}:{line}")
    assert offenders == []


def test_the_at_split_finder_finds_splits() -> None:
    code = 'a.rsplit("@", 1)\nb.partition(b"@")\nc.split(",")\nd.rfind("@")\n"x@y".upper()\n'
    assert at_splits(code) == [1, 2, 4]

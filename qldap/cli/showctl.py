"""``qmail-showctl``: every control file with its value or default and meaning, then what looks wrong.

Output (qmail-showctl(8)): a few build facts, then per known control file a block starting
``NAME: VALUE``, ``NAME: (Default.) DEFAULT`` or ``NAME: Oops! Trouble reading this file.``, list and
text files with one indented line per entry, and ``  # MEANING`` from the registry
(:mod:`qldap.control.known`); the POP-before-SMTP files use qmail-ldap's phrases (``PBS cachesize is
1048576 bytes.`` …); the LDAP files follow ``Now the qmail-ldap specific files:``.  Files present in
``control/`` that qldap does not read are listed last: ``NAME: No longer used, please remove.`` for
obsolete names, ``NAME: I have no idea what this file does.`` for the rest.

Then ``warning: …`` lines for settings that are dangerous rather than merely unusual: a rule that lets
every client relay (an open relay, worse with an empty ``rcpthosts``), RELAYCLIENT in the SMTP
service environment, a world-writable control directory or file, a password or shared secret that
every local user can read, a compiled ``.cdb`` older than its source, an integer file without digits,
a missing ``me``, an invalid services.yaml.  Secrets are never printed, only whether they are set.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from qldap.cli._run import fatal, run
from qldap.control.files import ControlDir, find_root
from qldap.control.known import ENTRIES, KNOWN, ControlFile, FromMe, Kind, effective_default
from qldap.errors import ConfigError
from qldap.exitcodes import ExitCode
from qldap.mailauth.keys import KEY_DIR, KeyFileError, KeyTable, load_key
from qldap.queue.layout import SPLIT, resolve_ids

PROG = "qmail-showctl"
OOPS = "Oops! Trouble reading this file."
OBSOLETE = "No longer used, please remove."
UNKNOWN = "I have no idea what this file does."
LDAP_HEADER = "Now the qmail-ldap specific files:"
TEXT_LINES_SHOWN = 20

SECRETS = frozenset({"ldappassword", "ldapgrouppassword", "pbssecret"})
"""Files whose content is a credential: shown as set or empty, warned about when others can read them."""
PRIVATE_KEYS = frozenset({"smtpcert", "remotecert"})
"""PEM files that hold a private key: only their size is shown."""
LDAP_SPECIFIC = frozenset(
    {e.name for e in ENTRIES if e.name.startswith(("ldap", "pbs"))}
    | {"aliasdomains", "defaultquotasize", "defaultquotacount", "dirmaker", "quotawarning"}
)
VERBATIM = frozenset({"custombouncetext", "quotawarning"})
"""Texts shown line for line; every other file is shown without its blank and ``#`` comment lines."""
CDB_SOURCES = (("locals", "locals.cdb"), ("rcpthosts", "rcpthosts.cdb"),
               ("morercpthosts", "morercpthosts.cdb"))

_VALUE_PHRASES: Mapping[str, Callable[[str], str]] = {
    "pbscachesize": lambda v: f"PBS cachesize is {v} bytes.",
    "pbsip": lambda v: f"Bind PBS daemon to {v}.",
    "pbsport": lambda v: f"PBS deamon listens on port {v}.",
    "pbstimeout": lambda v: f"PBS entries will be valid for {v} seconds.",
}
_ITEM_PHRASES: Mapping[str, tuple[Callable[[str], str], str]] = {
    "pbsservers": (lambda v: f"PBS server {v}.", "No PBS servers."),
    "pbsenv": (lambda v: f"Environment Variable: {v}", "No environment variables will be passed."),
}


def safe(text: str) -> str:
    """*text* with characters outside printable ASCII shown as ``?`` (as the C tool's safeput)."""
    return "".join("?" if ord(c) < 32 or ord(c) > 126 else c for c in text)


@dataclass(frozen=True, slots=True)
class Showing:
    """The report: the listing lines and the warnings, printed in that order."""

    lines: tuple[str, ...]
    warnings: tuple[str, ...]

    def render(self) -> str:
        """Listing, a blank line, then the warnings (if any)."""
        out = list(self.lines)
        if self.warnings:
            out += ["", *(f"warning: {w}" for w in self.warnings)]
        return "\n".join(out) + "\n"


def default_phrase(entry: ControlFile, me: str | None) -> str:
    """What a program uses when *entry*'s file is absent, in words."""
    value = effective_default(entry, me)
    if isinstance(entry.default, FromMe):
        return f"{me} (the value of me)" if me else "the value of me, which is not set!"
    if entry.name in _VALUE_PHRASES and value is not None:
        return _VALUE_PHRASES[entry.name](str(int(value) if isinstance(value, bool) else value))
    if entry.name in _ITEM_PHRASES:
        return _ITEM_PHRASES[entry.name][1]
    if entry.required:
        return "undefined! Uh-oh"
    if isinstance(value, bool):
        return "1 (on)" if value else "0 (off)"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value if value else "empty"
    absent = {Kind.LIST: "none", Kind.MAP: "none", Kind.TEXT: "absent", Kind.CDB: "absent"}
    return absent.get(entry.kind, "not set")


def _leading_digits(line: str) -> str:
    end = 0
    while end < len(line) and line[end] in "0123456789":
        end += 1
    return line[:end]


class _Lister:
    """Builds the blocks of one root; collects warnings on the way."""

    def __init__(self, ctl: ControlDir, me: str | None) -> None:
        self.ctl = ctl
        self.me = me
        self.warnings: list[str] = []

    def block(self, entry: ControlFile) -> list[str]:
        name = entry.name
        head = f"{name}: "
        try:
            if self.ctl.exists(name):
                body = self._present(entry)
            else:
                body = [head + "(Default.) " + default_phrase(entry, self.me)]
        except ConfigError:
            body = [head + OOPS]
        return [*body, f"  # {entry.meaning}"]

    def _present(self, entry: ControlFile) -> list[str]:
        name, ctl = entry.name, self.ctl
        head = f"{name}: "
        if not self.ctl.path(name).is_file():
            return [head + OOPS]
        if entry.kind is Kind.CDB or name in PRIVATE_KEYS:
            return [head + f"present, {self.ctl.path(name).stat().st_size} bytes (not shown)"]
        if name in SECRETS:
            value = ctl.line(name) or ""
            return [head + ("set (not shown)" if value else "(empty)")]
        if entry.kind in (Kind.INTEGER, Kind.BOOLEAN):
            return [head + self._number(entry)]
        if entry.kind is Kind.LINE:
            value = ctl.line(name) or ""
            if name in _VALUE_PHRASES:
                return [head + _VALUE_PHRASES[name](safe(value))]
            return [head + (safe(value) if value else "(empty)")]
        items = (ctl.raw_lines(name) or []) if name in VERBATIM else ctl.lines(name)
        if name in _ITEM_PHRASES:
            items = [_ITEM_PHRASES[name][0](item) for item in items]
        if not items:
            return [head + "(empty)"]
        shown = [f"  {safe(item)}" for item in items[:TEXT_LINES_SHOWN]]
        if len(items) > TEXT_LINES_SHOWN:
            shown.append(f"  … ({len(items) - TEXT_LINES_SHOWN} more lines)")
        return [head.rstrip(), *shown]

    def _number(self, entry: ControlFile) -> str:
        first = (self.ctl.line(entry.name) or "").strip("\n")
        digits = _leading_digits(first)
        if not digits:
            self.warnings.append(f"control/{entry.name} does not start with a number; the default applies")
            return "(Default.) " + default_phrase(entry, self.me)
        if entry.name in _VALUE_PHRASES:
            return _VALUE_PHRASES[entry.name](str(int(digits)))
        if entry.kind is Kind.BOOLEAN:
            return f"{int(digits)} ({'on' if int(digits) else 'off'})"
        return str(int(digits))


def show(root: Path) -> Showing:
    """Everything qmail-showctl prints for *root*.

    Raises:
        ConfigError: ``ROOT/control`` cannot be listed.
    """
    ctl = ControlDir(root)
    try:
        names = sorted(os.listdir(ctl.dir))
    except OSError as exc:
        raise ConfigError(f"unable to open {ctl.dir}: {exc.strerror or exc}") from None
    try:
        me = ctl.line("me") or None
    except ConfigError:
        me = None
    ids = resolve_ids()
    lines = [
        f"qmail home directory: {root}.",
        "user-ext delimiter: -.",
        f"subdirectory split: {SPLIT}.",
        f"user ids: alias {ids.alias}, qmaild {ids.qmaild}, qmailq {ids.qmailq}, qmails {ids.qmails}, "
        f"qmailr {ids.qmailr}.",
        f"group id: {ids.gid}.",
    ]
    lister = _Lister(ctl, me)
    known = [e for e in ENTRIES if not e.obsolete]
    for entry in (e for e in known if e.name not in LDAP_SPECIFIC):
        lines += ["", *lister.block(entry)]
    lines += ["", LDAP_HEADER]
    for entry in (e for e in known if e.name in LDAP_SPECIFIC):
        lines += ["", *lister.block(entry)]

    rules_files = services_rules(root, lister.warnings)
    extra = []
    for name in names:
        found = KNOWN.get(name)
        if found is not None and not found.obsolete:
            continue
        if found is not None:
            extra.append(f"{name}: {OBSOLETE}")
        elif (ctl.dir / name) in rules_files:
            extra.append(f"{name}: rules file of {rules_files[ctl.dir / name]} in services.yaml.")
        elif name == KEY_DIR and (ctl.dir / name).is_dir():
            extra.append(f"{name}: directory of DKIM keys made by qldap dkim keygen (see dkimkeys).")
        else:
            extra.append(f"{safe(name)}: {UNKNOWN}")
    if extra:
        lines += ["", *extra]
    return Showing(tuple(lines), tuple(lister.warnings + dangers(root, ctl, me, rules_files)))


# -- dangerous settings ---------------------------------------------------------------------------


def services_rules(root: Path, warnings: list[str]) -> dict[Path, str]:
    """The rules files services.yaml names (path → section); an invalid services.yaml is a warning."""
    from qldap.control.services import load_services

    if not (root / "services.yaml").exists():
        warnings.append("services.yaml is missing: qldap up has nothing to start")
        return {}
    try:
        services = load_services(root)
    except ConfigError as exc:
        warnings.append(f"{exc} (qldap up refuses to start)")
        return {}
    return {spec.rules: spec.name for spec in services.specs if spec.rules is not None}


def _relay_for_all(path: Path) -> tuple[str | None, str | None]:
    """(line description of a rule granting RELAYCLIENT to every client, parse error) of one rules file."""
    from qldap.control.rules import RulesError, parse_rules

    try:
        rules = parse_rules(path.read_text(encoding="utf-8", errors="surrogateescape"), source=str(path))
    except (OSError, RulesError) as exc:
        return None, str(exc)
    candidates = [rules.exact.get("")] + [rule for net, rule in rules.networks if net.prefixlen == 0]
    for rule in candidates:
        if rule is not None and rule.allow and any(name == "RELAYCLIENT" for name, _v in rule.env):
            return f"{path} line {rule.line}", None
    return None, None


def _smtpd_env_relays(root: Path) -> bool:
    from qldap.control.services import Daemon, load_services

    try:
        spec = load_services(root).get(Daemon.SMTPD)
    except ConfigError:
        return False
    return spec is not None and any(name == "RELAYCLIENT" for name, _v in spec.env)


def dangers(root: Path, ctl: ControlDir, me: str | None, rules_files: Mapping[Path, str]) -> list[str]:
    """Warnings about settings that open the relay, leak secrets or silently do nothing."""
    out: list[str] = []
    if me is None:
        out.append("control/me is missing or empty: every program will refuse to run")
    mode = _mode(ctl.dir)
    if mode & stat.S_IWOTH:
        out.append(f"control directory {ctl.dir} is world-writable (mode {stat.S_IMODE(mode):04o}): "
                   "any local user can change this server's configuration")
    for path in sorted(ctl.dir.iterdir()):
        fmode = _mode(path)
        if stat.S_ISREG(fmode) and fmode & stat.S_IWOTH:
            out.append(f"control/{path.name} is world-writable (mode {stat.S_IMODE(fmode):04o})")
        if path.name in SECRETS and stat.S_ISREG(fmode) and fmode & stat.S_IROTH and path.stat().st_size:
            out.append(f"control/{path.name} is readable by every local user "
                       f"(mode {stat.S_IMODE(fmode):04o}); make it mode 0640 or 0600")
    out.extend(_dkim_dangers(ctl))
    for source, cdb in CDB_SOURCES:
        src, comp = _mtime(ctl.path(source)), _mtime(ctl.path(cdb))
        if src is not None and comp is not None and src > comp:
            out.append(f"control/{cdb} is older than control/{source}: "
                       "run qmail-cdb, the edits are not in effect")
    if _mtime(ctl.path("morercpthosts")) is not None and _mtime(ctl.path("morercpthosts.cdb")) is None:
        out.append("control/morercpthosts exists but morercpthosts.cdb does not: only the .cdb is read")
    if not ctl.exists("ldapserver") and not (root / "directory.ldif").exists():
        out.append(f"no control/ldapserver and no {root / 'directory.ldif'}: no user can be found")
    open_by: list[str] = []
    files = set(rules_files) | ({ctl.path("qmail-smtpd.rules")} if ctl.exists("qmail-smtpd.rules") else set())
    for path in sorted(files):
        where, error = _relay_for_all(path)
        if error:
            out.append(f"rules file {error}: the SMTP server refuses every connection until it is fixed")
        if where:
            open_by.append(where)
            out.append(f'{where}: every client may relay (":allow,RELAYCLIENT"): '
                       "this server is an open relay")
    if _smtpd_env_relays(root):
        open_by.append("services.yaml smtpd env")
        out.append("services.yaml: smtpd: env sets RELAYCLIENT for every client: "
                   "this server is an open relay")
    if open_by and not ctl.exists("rcpthosts.cdb") and not ctl.lines("rcpthosts"):
        state = "empty" if ctl.exists("rcpthosts") else "missing"
        out.append(f"rcpthosts is {state} and every client may relay ({', '.join(open_by)}): "
                   "anyone can send mail to any domain through this server")
    return out


def _dkim_dangers(ctl: ControlDir) -> list[str]:
    """A DKIM key that signing cannot use, or that every local user can read (qldap-dkim(8))."""
    try:
        table = KeyTable.from_control(ctl)
    except ConfigError as exc:
        return [f"{exc}: no mail is signed until it is fixed"]
    out = []
    for entry in table.entries:
        what = f"control/dkimkeys: key {entry.selector} of {entry.domain}"
        try:
            load_key(entry)
        except KeyFileError as exc:
            fate = "deferred (dkimstrict)" if table.strict else "sent unsigned"
            out.append(f"{what}: {exc}: its mail is {fate}")
            continue
        fmode = _mode(entry.path)
        if fmode & stat.S_IROTH:
            out.append(f"{what}: {entry.path} is readable by every local user "
                       f"(mode {stat.S_IMODE(fmode):04o}); make it mode 0640 or 0600")
    return out


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``qmail-showctl [--root DIR]``."""

    def body(args: Sequence[str]) -> int:
        parser = argparse.ArgumentParser(prog=PROG, description="show the control files and their meaning")
        parser.add_argument("--root", help="the qmail root (default: $QLDAP_ROOT or /var/qmail)")
        ns = parser.parse_args(list(args))
        root = find_root(ns.root)
        if not stat.S_ISDIR(_mode(root)):
            fatal(PROG, f"unable to chdir to {root}")
            return ExitCode.TEMPORARY
        sys.stdout.write(show(root).render())
        return ExitCode.OK

    return run(PROG, body, argv)


def _mode(path: Path) -> int:
    try:
        return path.stat().st_mode
    except OSError:
        return 0


if __name__ == "__main__":
    sys.exit(main())

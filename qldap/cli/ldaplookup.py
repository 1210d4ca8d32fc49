"""qmail-ldaplookup: show how the directory answers a uid, mail or filter query (qmail-ldaplookup(8)).

Why it prints values "as local delivery interprets them" and not raw: the tool exists to debug
deliveries, so it applies the same defaults and checks (ldapuid, quota defaults, dot-mode, store
rules) and stops with ``qmail-ldaplookup: fatal: FUNC: TEXT`` (exit 111) where delivery would fail.
The function names and error strings follow qmail-ldap's tool, which administrators' notes quote.
"""

from __future__ import annotations

import getopt
import os
import pwd
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from qldap.cli._run import fatal, run
from qldap.control.files import ControlDir, find_root
from qldap.directory import schema as s
from qldap.directory.config import LdapConfig
from qldap.directory.entry import Entry
from qldap.directory.errors import (
    AddressWithoutHost,
    BadCredentials,
    DirectoryUnavailable,
    IllegalValue,
    MissingAttribute,
    NotUnique,
    SearchTimeout,
    ServerUnreachable,
)
from qldap.directory.filters import uid_filter
from qldap.directory.lookup import Directory
from qldap.directory.open import open_directory
from qldap.directory.validate import (
    check_path,
    check_user,
    parse_delivery_modes,
    parse_dot_mode,
    parse_number,
    resolve_id,
)
from qldap.errors import ConfigError, PermanentFailure
from qldap.exitcodes import ExitCode
from qldap.local.spawn import Account, alias_account  # the alias user local delivery uses

PROG = "qmail-ldaplookup"
ALIAS_USER = "alias"
ALIASDEVNULL = '|echo "Unable to deliver mail: account incorrectly configured. (#5.3.5)"; exit 100'
DASHES = "-" * 55
USAGE = (
    "usage:"
    "\t{p} [-d level] [-D binddn -w passwd] -u uid [-p passwd]\n"
    "\t{p} [-d level] [-D binddn -w passwd] -m mail\n"
    "\t{p} [-d level] [-D binddn -w passwd] -f ldapfilter\n"
    "options:\n"
    "\t--root DIR\tqmail root (default $QLDAP_ROOT or /var/qmail)\n"
    "\t-d level \tsets log-level to level\n"
    "\t-u uid   \tsearch for user id uid (pop3/imap lookup)\n"
    "\t-p passwd\tpassword for user id lookups (only by root)\n"
    "\t-m mail  \tlookup the mailaddress\n"
    "\t-f filter\tsearch with a raw ldap filter\n"
    "\t-D binddn\tbind DN\n"
    "\t-w passwd\tbind password\n"
)


class _Fatal(Exception):
    """Stop with ``qmail-ldaplookup: fatal: FUNC: TEXT`` and exit 111."""

    def __init__(self, func: str, text: str) -> None:
        super().__init__(f"{func}: {text}")


class _Usage(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Options:
    """The parsed command line."""

    mode: str  # "uid" | "mail" | "filter"
    value: str
    root: str | None = None
    binddn: str | None = None
    bindpw: str | None = None
    password: str | None = None
    loglevel: str | None = None


def parse_args(argv: Sequence[str]) -> Options:
    """Options from *argv*, POSIX getopt style.

    Raises:
        _Usage: bad usage (unknown option, -w without -D, not exactly one of -u/-m/-f, extra args).
        PermissionError: -p given by a non-root user.
    """
    try:
        opts, rest = getopt.getopt(list(argv), "d:D:u:m:p:f:w:", ["root="])
    except getopt.GetoptError:
        raise _Usage()
    mode, value = "", ""
    got: dict[str, str] = {}
    for opt, arg in opts:
        if opt in ("-u", "-m", "-f"):
            if mode:
                raise _Usage()
            mode, value = {"-u": "uid", "-m": "mail", "-f": "filter"}[opt], arg
        elif opt == "-p" and os.geteuid() != 0:
            raise PermissionError("only the superuser may comapre passwords")
        else:
            got[opt] = arg
    if rest or not mode or ("-w" in got and "-D" not in got):
        raise _Usage()
    return Options(mode, value, got.get("--root"), got.get("-D"), got.get("-w"), got.get("-p"), got.get("-d"))


def _err(exc: DirectoryUnavailable) -> str:
    if isinstance(exc, ServerUnreachable):
        return "ldap server down or unreachable"
    if isinstance(exc, BadCredentials):
        return "wrong bind password for ldap server"
    if isinstance(exc, SearchTimeout):
        return "operation timed out"
    return f"{exc.text} {exc.detail}".rstrip()


def _attr_error(func: str, exc: PermanentFailure) -> _Fatal:
    if isinstance(exc, NotUnique):
        return _Fatal(func, "too many objects")
    if isinstance(exc, MissingAttribute):
        return _Fatal(func, "needed value is missing")
    return _Fatal(func, "illegal value")


def _single(entry: Entry, name: str, func: str | None = None) -> str | None:
    try:
        return entry.single(name)
    except NotUnique as exc:
        raise _attr_error(func or f"qldap_get_attr({name})", exc)


def alias_account_from_pw(pw: pwd.struct_passwd) -> Account:
    """The alias user as local delivery describes it, from a passwd entry."""
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)


class Printer:
    """Formats entries the way local delivery reads them; returns text, never prints itself."""

    def __init__(
        self, cfg: LdapConfig, directory: Directory, password: str | None, root: Path | None = None
    ) -> None:
        self.cfg, self.directory, self.password, self.root = cfg, directory, password, root
        self.warnings: list[str] = []

    def entry(self, e: Entry) -> list[str]:
        """The lines shown for one entry (without the two closing blank lines).

        Raises:
            _Fatal: a value local delivery would refuse.
        """
        out = [f"dn: {e.dn}", DASHES]
        classes = e.values(s.OBJECT_CLASS)
        if not classes:
            raise _Fatal(f"qldap_get_attr({s.OBJECT_CLASS})", "no such object")
        out += [f"{s.OBJECT_CLASS}: {v}" for v in classes]
        mail = _single(e, s.MAIL)
        if mail is None:
            raise _Fatal(f"qldap_get_attr({s.MAIL})", "no such object")
        out.append(f"{s.MAIL}: {mail}")
        out += [f"{s.MAIL_ALTERNATE}: {v}" for v in e.values(s.MAIL_ALTERNATE)]
        uid = _single(e, s.UID, "qldap_get_user")
        if uid is None:
            out.append(f"{s.UID}: undefined (forward only account required)")
        else:
            try:
                out.append(f"{s.UID}: {check_user(uid)}")
            except IllegalValue as exc:
                raise _attr_error("qldap_get_user", exc)
        status = s.AccountStatus.parse(_single(e, s.ACCOUNT_STATUS, "qldap_get_status"))
        shown = "undefined -> active" if status is s.AccountStatus.UNDEFINED else status.value
        out.append(f"{s.ACCOUNT_STATUS}: {shown}")
        host = _single(e, s.MAIL_HOST)
        out.append(f"{s.MAIL_HOST}: {host if host is not None else 'undefined'}")
        store = self._mailstore(e)
        if store is None:
            return out + self._forward_only(e)
        out += store
        out += self._delivery(e)
        return out

    def _mailstore(self, e: Entry) -> list[str] | None:
        func = "qldap_get_mailstore"
        home = _single(e, s.HOME_DIRECTORY, func) or ""
        store = _single(e, s.MAIL_STORE, func) or ""
        try:
            if home and (not home.startswith("/") or not check_path(home, s.HOME_DIRECTORY)):
                raise IllegalValue(home)
            if store:
                check_path(store)
        except IllegalValue as exc:
            raise _attr_error(func, exc)
        if home:
            return [f"homeDirectory: {home}", f"aliasEmpty: {store if store else 'using default'}"]
        if not store:
            return None
        if not store.startswith("/"):
            if not self.cfg.message_store:
                raise _Fatal(func, "illegal value")
            store = self.cfg.message_store + store
        return [f"homeDirectory: {store}", "aliasEmpty: using default"]

    def _forward_only(self, e: Entry) -> list[str]:
        alias = alias_account(self.root) if self.root is not None else None
        if alias is None:
            try:
                pw = pwd.getpwnam(ALIAS_USER)
            except KeyError:
                raise _Fatal("getpwnam", "Unable to find alias user!")
            alias = alias_account_from_pw(pw)
        forwards = e.values(s.FORWARDS)
        if not forwards:
            raise _Fatal(f"qldap_get_attr({s.FORWARDS}) for forward only user", "no such object")
        return [
            "forward only delivery via alias user",
            f"alias user: {alias.name}",
            f"alias user uid: {alias.uid}",
            f"alias user gid: {alias.gid}",
            f"alias user home: {alias.home}",
            f"alias user aliasempty: {ALIASDEVNULL}",
            *(f"{s.FORWARDS}: {v}" for v in forwards),
        ]

    def _delivery(self, e: Entry) -> list[str]:
        out: list[str] = []
        dot = _single(e, s.DOT_MODE, "qldap_get_dotmode")
        try:
            mode = parse_dot_mode(dot if dot is not None else self.cfg.default_dot_mode)
        except IllegalValue as exc:
            raise _attr_error("qldap_get_dotmode", exc)
        out.append(f"{s.DOT_MODE}: {mode.value}")
        for name, default, func in ((s.QMAIL_UID, self.cfg.ldap_uid, "qldap_get_uid"),
                                    (s.QMAIL_GID, self.cfg.ldap_gid, "qldap_get_gid")):  # fmt: skip
            try:
                out.append(f"{name}: {resolve_id(_single(e, name, func), default, name)}")
            except (IllegalValue, MissingAttribute) as exc:
                raise _attr_error(func, exc)
        defaults = {s.QUOTA_SIZE: self.cfg.quota_size, s.QUOTA_COUNT: self.cfg.quota_count, s.SIZE_MAX: 0}
        for name in (s.QUOTA_SIZE, s.QUOTA_COUNT, s.SIZE_MAX):
            raw = _single(e, name, "qldap_get_quota")
            try:
                number = defaults[name] if raw is None else parse_number(raw, name)
            except IllegalValue as exc:
                raise _attr_error("qldap_get_quota", exc)
            out.append(f"{name}: {number}{' (unlimited)' if number == 0 else ''}")
        modes = e.values(s.DELIVERY_MODE)
        for word in parse_delivery_modes(modes).unknown:
            self.warnings.append(f"undefined mail delivery mode: {word} (ignored).")
        out += [f"{s.DELIVERY_MODE}: {v}" for v in modes]
        out += [f"{s.FORWARDS}: {v}" for v in e.values(s.FORWARDS)]
        out += [f"{s.PROGRAM}: {v}" for v in e.values(s.PROGRAM)]
        reply = _single(e, s.REPLY_TEXT)
        if reply is None:
            out.append(f"{s.REPLY_TEXT}: undefined")
        else:
            out += [f"{s.REPLY_TEXT}:", "=== begin ===", reply, "=== end ==="]
        if self.password is not None:
            out += self._compare(e)
        return out

    def _compare(self, e: Entry) -> list[str]:
        from qldap.passwords.schemes import MalformedHash

        if not self.cfg.rebind and _single(e, s.PASSWORD) is None:
            raise _Fatal(f"qldap_get_attr({s.PASSWORD})", "no such object")
        error = "authorization failed, wrong password"
        try:
            ok = self.directory.verify_password(e, self.password or "")
        except MalformedHash:
            ok, error = False, "illegal value"
        except DirectoryUnavailable as exc:
            ok, error = False, _err(exc)
        if ok:
            return ["", "PASSWORD COMPARE was successful."]
        return ["", "PASSWORD COMPARE was NOT successful.", f"\terror was: {error}"]


def _searches(directory: Directory, opts: Options) -> list[str]:
    if opts.mode == "uid":
        return [uid_filter(opts.value, directory.config.objectclass)]
    if opts.mode == "filter":
        return [opts.value]
    oc = directory.config.objectclass
    return [c.filter(oc) for c in directory.recipient_candidates(opts.value)]


def lookup(directory: Directory, opts: Options, write: list[str]) -> tuple[int, list[str]]:
    """Run the query, appending output lines to *write*; returns (exit code, warnings).

    Raises:
        _Fatal: an LDAP error or a value local delivery would refuse.
    """
    attrs: tuple[str, ...] = s.USER_ATTRIBUTES
    password = opts.password if opts.mode == "uid" else None
    if password is not None and not directory.config.rebind:
        attrs = (*attrs, s.PASSWORD)
    entries: list[Entry] = []
    for flt in _searches(directory, opts):
        write += [f"Searching ldap for: {flt}", f"under dn: {directory.config.basedn}"]
        try:
            entries = directory.search_filter(flt, attrs)
        except DirectoryUnavailable as exc:
            bind = isinstance(exc, ServerUnreachable | BadCredentials)
            if bind:
                # qmail-ldaplookup(8) binds before it announces a search: a bind failure prints none
                del write[-2:]
            raise _Fatal("qldap_bind" if bind else "qldap_filter", _err(exc))
        if not entries:
            write.append("No entries found.")
        elif len(entries) == 1:
            write.append("Found 1 entry:")
        else:
            write.append(f"Found {len(entries)} entries:")
            if opts.mode != "filter":
                write.append("Uh-oh: multiple entries found but should be unique!")
                password = None
        write.append("")
        if entries:
            break
    if not entries:
        raise _Fatal("qldap_first", "no such object")
    printer = Printer(directory.config, directory, password, find_root(opts.root))
    for e in entries:
        write += printer.entry(e)
        write += ["", ""]
    return ExitCode.OK, printer.warnings


def _body(argv: Sequence[str]) -> int:
    try:
        opts = parse_args(argv)
    except _Usage:
        sys.stderr.write(USAGE.format(p=PROG))
        return ExitCode.USAGE
    except PermissionError as exc:
        fatal(PROG, str(exc))
        return ExitCode.USAGE
    if opts.loglevel is not None:
        os.environ["LOGLEVEL"] = opts.loglevel
    ctl = ControlDir(find_root(opts.root))
    try:
        cfg = LdapConfig.from_control(ctl)
    except ConfigError as exc:
        fatal(PROG, f"unable to read controls: {exc}")
        return ExitCode.TEMPORARY
    if opts.binddn is not None:
        cfg = replace(cfg, login=opts.binddn, password=opts.bindpw or "")
    cfg = replace(cfg, cache_ttl=0)
    directory = open_directory(ctl, config=cfg)
    out: list[str] = []
    try:
        code, warnings = lookup(directory, opts, out)
    except AddressWithoutHost:
        _flush(out)
        fatal(PROG, "building filter: address must include host name")
        return ExitCode.USAGE
    except _Fatal as exc:
        _flush(out)
        fatal(PROG, str(exc))
        return ExitCode.TEMPORARY
    finally:
        directory.close()
    _flush(out)
    for w in warnings:
        sys.stderr.write(f"{PROG}: warning: {w}\n")
    return code


def _flush(lines: list[str]) -> None:
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``qmail-ldaplookup``."""
    return run(PROG, _body, argv)

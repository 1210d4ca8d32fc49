"""The small programs: qmail-verify, qmail-ldaplookup, digest, auth_pop/auth_smtp, qmail-cdb.

Each case runs the C program and qldap's console script of the same name with the same arguments,
input and controls.  Observed: exit status, stdout and (where it is part of the contract) stderr,
with the program-name prefix of messages left as it is; files a program writes are compared byte
for byte.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from .core import Case, Decision, Observed, show
from .world import Result, World


def _both(world: World, program: str, argv: Sequence[str], stdin: bytes = b"",
          env: Mapping[str, str] | None = None) -> tuple[Result, Result]:  # fmt: skip
    full = world.env(env)
    with ThreadPoolExecutor(2) as pool:  # the two sides share nothing but the controls
        c = pool.submit(world.run, [world.c(program), *argv], stdin, full, cwd=world.base)
        q = pool.submit(world.run, [world.q(program), *argv], stdin, full, cwd=world.base)
        return c.result(), q.result()


def _text(r: Result, stderr: bool = False) -> str:
    lines = [f"exit {r.rc}", show(r.out)]
    if stderr:
        lines.append("stderr: " + show(r.err))
    return "\n".join(lines)


def simple(group: str, name: str, program: str, argv: Sequence[str], stdin: bytes = b"",
           controls: Mapping[str, str | None] | None = None, stderr: bool = False,
           env: Mapping[str, str] | None = None, decisions: Sequence[Decision] = (),
           scrub: Sequence[tuple[str, str]] = ()) -> Case:  # fmt: skip
    """Same argv and stdin to both programs; compare exit status and stdout (and stderr if asked)."""

    def run(world: World) -> Observed:
        world.controls(controls)
        c, q = _both(world, program, argv, stdin, env)
        tc, tq = _text(c, stderr), _text(q, stderr)
        for pat, rep in scrub:
            tc, tq = re.sub(pat, rep, tc), re.sub(pat, rep, tq)
        return Observed(tc, tq)

    return Case(group, name, run, decisions, parallel=True, controls=controls)


# -- qmail-verify ------------------------------------------------------------------------------
def verify_cases() -> list[Case]:
    nocatch = {"locals": "example.org\nmx.example.org\nsub.example.org"}
    addrs = [
        ("known", "alice@example.org", None), ("alternate", "alice.alt@example.org", None),
        ("case", "ALICE@Example.Org", None), ("catchall", "nobody@example.org", None),
        ("unknown", "nobody@sub.example.org", nocatch), ("disabled", "dave@example.org", None),
        ("deleted", "gina@example.org", None), ("noaccess", "erin@example.org", None),
        ("no-host", "alice", None), ("dash-exact", "list-info@example.org", None),
        ("dash-catchall", "list-other@example.org", None),
        ("several", "alice@example.org\0dave@example.org\0nobody@sub.example.org", nocatch),
        ("status-nopop", "nora@example.org", None), ("status-unknown-value", "hugo@example.org", None),
        ("uid-0", "otto@example.org", None), ("store-with-dotdot", "pat@example.org", None),
        ("ldap-down", "alice@example.org", {"ldapserver": "127.0.0.1:1", "ldaptimeout": "2"}),
    ]  # fmt: skip
    return [simple("verify", n, "qmail-verify", [], (a + "\0").encode(), controls=c) for n, a, c in addrs]


# -- qmail-ldaplookup --------------------------------------------------------------------------
LOOKUP_OUTPUT = Decision(
    "ldaplookup-output", "qmail-ldaplookup prints its own report layout",
    lambda t: re.sub(r"(?s)^(exit \d+)\n.*", r"\1", t),
)


def lookup_cases() -> list[Case]:
    nocatch = {"locals": "example.org\nmx.example.org\nsub.example.org"}
    down = {"ldapserver": "127.0.0.1:1", "ldaptimeout": "2"}
    runs: list[tuple[str, list[str], Mapping[str, str | None] | None]] = [
        ("mail-known", ["-m", "alice@example.org"], None),
        ("mail-alternate", ["-m", "alice.alt@example.org"], None),
        ("mail-catchall", ["-m", "nobody@example.org"], None),
        ("mail-dash-exact", ["-m", "list-info@example.org"], None),
        ("mail-dash-catchall", ["-m", "list-foo@example.org"], None),
        ("mail-dash-deeper", ["-m", "list-foo-bar@example.org"], None),
        ("mail-unknown", ["-m", "nobody@sub.example.org"], nocatch),
        ("mail-disabled", ["-m", "dave@example.org"], None),
        ("mail-status-nopop", ["-m", "nora@example.org"], None),
        ("mail-program-entry", ["-m", "tina@example.org"], None),
        ("mail-reply-entry", ["-m", "fay@example.org"], None),
        ("mail-quota-entry", ["-m", "carol@example.org"], None),
        ("mail-dash-alternate", ["-m", "vera-foo@example.org"], None),
        ("uid-known", ["-u", "alice"], None),
        ("uid-unknown", ["-u", "zed"], None),
        ("uid-password-ok", ["-u", "alice", "-p", "alicepw"], None),
        ("uid-password-bad", ["-u", "alice", "-p", "wrong"], None),
        ("uid-password-sha", ["-u", "bob", "-p", "bobpw"], None),
        ("uid-password-md5", ["-u", "carol", "-p", "carolpw"], None),
        ("uid-password-crypt", ["-u", "frank", "-p", "frankpw"], None),
        ("ldap-down-mail", ["-m", "alice@example.org"], down),
        ("ldap-down-uid", ["-u", "alice"], down),
        ("usage", [], None),
    ]
    return [simple("ldaplookup", n, "qmail-ldaplookup", a, controls=c, decisions=())
            for n, a, c in runs]  # fmt: skip


# -- digest ------------------------------------------------------------------------------------
DIGEST_C = Decision(
    "digest-option-C", "digest -C (DES crypt format) is accepted as the usage says",
    lambda t: "exit <usage>" if t.startswith("exit 1\n") or t.startswith("exit 0\n{SHA}") else t,
)


CRYPT_SALT = Decision(
    "digest-crypt-salt", "digest -t crypt makes a usable hash where qmail-ldap's prints {CRYPT}*0",
    lambda t: re.sub(r"^\{CRYPT\}(\*0|[./0-9A-Za-z]{13})$", "{CRYPT}<DES hash or *0>", t, flags=re.M),
)


def digest_cross(scheme: str, extra: Sequence[str]) -> Case:
    """A random-salt hash: each side verifies the hash the *other* side made (``digest -v``).

    The C digest turns some random salts into an invalid crypt salt and prints ``{CRYPT}*0`` (the
    decision ``digest-crypt-salt``, shown by the ``crypt-salt-plus`` case): it is asked again then.
    """

    def run(world: World) -> Observed:
        world.controls()
        c, q = _both(world, "digest", [*extra, "-t", scheme, "secret"])
        for _ in range(20):
            if not c.out.decode().strip().endswith("}*0"):
                break
            c = world.run([world.c("digest"), *extra, "-t", scheme, "secret"], env=world.env())
        made_c, made_q = c.out.decode().strip(), q.out.decode().strip()
        if c.rc or q.rc or not made_c or not made_q:
            return Observed(_text(c), _text(q))
        cv = world.run([world.c("digest"), "-v", "secret", made_q], env=world.env())
        qv = world.run([world.q("digest"), "-v", "secret", made_c], env=world.env())
        prefix = lambda h: h.split("}")[0] + "}" + ("$" + h.split("$")[1] if "$" in h else "")  # noqa: E731
        return Observed(f"{prefix(made_c)}\n{_text(cv)}", f"{prefix(made_q)}\n{_text(qv)}")

    return Case("digest", f"cross-{scheme}{''.join(extra)}", run, parallel=True)


def digest_verify_c_made(scheme: str, password: str) -> Case:
    """A hash the C digest made (fixed salt), checked by both sides' ``digest -v`` with *password*."""

    def run(world: World) -> Observed:
        world.controls()
        made = world.run([world.c("digest"), "-s", "Zml4ZWRzYWx0", "-t", scheme, "secret"], env=world.env())
        hashed = made.out.decode().strip()
        c, q = _both(world, "digest", ["-v", password, hashed])
        return Observed(f"{hashed}\n{_text(c, True)}", f"{hashed}\n{_text(q, True)}")

    return Case("digest", f"verify-c-made-{scheme}-{'right' if password == 'secret' else 'wrong'}", run,
                parallel=True)


def digest_cases() -> list[Case]:
    out: list[Case] = []
    b64salt, hexsalt = "c2FsdHNhbHQ=", "73616c7473616c74"
    for t in ("md4", "md5", "nsmta", "rmd160", "sha", "sha1", "SHA", "MD5"):
        out.append(simple("digest", f"type-{t}", "digest", ["-t", t, "secret"]))
    for t, extra in (("crypt", []), ("crypt", ["-5"]), ("crypt", ["-b"]), ("ssha", []), ("smd5", []),
                     ("CRYPT", [])):  # fmt: skip
        out.append(digest_cross(t, extra))
    for t in ("ssha", "smd5"):
        out.append(simple("digest", f"type-{t}-b64salt", "digest", ["-s", b64salt, "-t", t, "secret"]))
        out.append(simple("digest", f"type-{t}-hexsalt", "digest", ["-S", hexsalt, "-t", t, "secret"]))
    out.append(simple("digest", "crypt-salt", "digest", ["-s", "YWI=", "-t", "crypt", "secret"]))
    out.append(simple("digest", "md5-crypt", "digest", ["-5", "-s", "Zml4ZWRzbHQ=", "-t", "crypt", "secret"]))
    verify = [
        ("verify-sha-ok", "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="),
        ("verify-sha-bad", "{SHA}AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        ("verify-md5-ok", "{MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ=="),
        ("verify-ssha-ok", "{SSHA}H1Ao2i02UIvrBfYj6Tx0Gj5FKgFzYWx0"),
        ("verify-crypt-ok", "{crypt}$1$fixedslt$tS0k6Y8gW5P0k1M2yU7Mz/"), ("verify-plain", "secret"),
        ("verify-unknown-scheme", "{FOO}secret"),
    ]  # fmt: skip
    for name, h in verify:
        out.append(simple("digest", name, "digest", ["-v", "secret", h]))
    out.append(simple("digest", "option-C", "digest", ["-C", "-t", "sha", "secret"], decisions=(DIGEST_C,)))
    out.append(simple("digest", "usage", "digest", []))
    out.append(simple("digest", "type-ns-mta-md5", "digest",
                      ["-s", b64salt, "-t", "ns-mta-md5", "secret"]))
    out.append(simple("digest", "all-types-fixed-salt", "digest", ["-s", b64salt, "secret"]))
    salt16 = "Zml4ZWRzYWx0Zml4ZWRzbHQ="
    out.append(simple("digest", "crypt-format-sha256", "digest",
                      ["-f", "$5$XXXXXXXXXXXXXXXX$", "-s", salt16, "-t", "crypt", "secret"]))
    out.append(simple("digest", "crypt-format-sha512", "digest",
                      ["-f", "$6$XXXXXXXXXXXXXXXX$", "-s", salt16, "-t", "crypt", "secret"]))
    out.append(simple("digest", "crypt-salt-plus", "digest", ["-s", "+/+/", "-t", "crypt", "secret"],
                      decisions=(CRYPT_SALT,)))
    out.append(simple("digest", "option-c", "digest", ["-c", "-s", b64salt, "-t", "ssha", "secret"]))
    usage = [(r"(?s)\nusage:.*", "\nusage: <the usage text>")]  # the wording of the usage lines is free
    out.append(simple("digest", "bad-base64-salt", "digest", ["-s", "!!!", "-t", "ssha", "secret"],
                      stderr=True, scrub=usage))
    out.append(simple("digest", "bad-hex-salt", "digest", ["-S", "zz", "-t", "ssha", "secret"],
                      stderr=True, scrub=usage))
    out.append(simple("digest", "verify-usage", "digest", ["-v", "secret"]))
    for scheme in ("md4", "md5", "ns-mta-md5", "smd5", "sha", "ssha", "rmd160", "crypt"):
        for pw in ("secret", "wrong"):
            out.append(digest_verify_c_made(scheme, pw))
    out.append(simple("digest", "unknown-type", "digest", ["-t", "nosuch", "secret"]))
    return out


# -- checkpassword programs --------------------------------------------------------------------
def _checkpw(world: World, exe: str, user: str, pw: str, env: Mapping[str, str],
             args: Sequence[str] = ()) -> Result:  # fmt: skip
    # fd 3 carries the credentials (checkpassword protocol): the shell moves them there from stdin;
    # the next program prints its environment and where it runs
    shell = 'exec 3<&0 </dev/null; exec "$0" "$@"'
    nxt = ["/bin/sh", "-c", 'echo "cwd=$(pwd)"; echo "id=$(id -u):$(id -g)"; exec /usr/bin/env']
    proc = subprocess.run(["/bin/sh", "-c", shell, exe, *args, *nxt], input=f"{user}\0{pw}\0\0".encode(),
                          capture_output=True, env=dict(env), cwd=world.base, timeout=30)  # fmt: skip
    return Result(proc.returncode, proc.stdout, proc.stderr)


# the environment the test itself sets up, and what the shells add: everything else was handed on
ENV_OWN = ("PATH", "QLDAP_ROOT", "LANG", "TCPREMOTEIP", "PWD", "SHLVL", "_", "OLDPWD")


LC_CTYPE = Decision(
    "checkpassword-lc-ctype", "Python's C-locale coercion (PEP 538) adds LC_CTYPE=C.UTF-8 to the environment",
    lambda t: t.replace("\nLC_CTYPE=C.UTF-8\n", "\n"),
)


def checkpw(name: str, program: str, user: str, pw: str, decisions: Sequence[Decision] = (LC_CTYPE,)) -> Case:
    """auth_pop/auth_smtp with fd 3 credentials; compare exit and the environment handed on."""

    def observe(r: Result) -> str:
        env = [line for line in r.out.decode("latin-1").splitlines() if line.split("=")[0] not in ENV_OWN]
        return f"exit {r.rc}\n" + "\n".join(sorted(env))

    def run(world: World) -> Observed:
        world.controls()
        world.mailboxes()
        env = world.env({"TCPREMOTEIP": "10.0.0.1"})
        return Observed(observe(_checkpw(world, world.c(program), user, pw, env)),
                        observe(_checkpw(world, world.q(program), user, pw, env)))  # fmt: skip

    return Case("checkpassword", name, run, decisions)


def checkpw_cases() -> list[Case]:
    users = [("ok-ssha", "alice", "alicepw"), ("bad-password", "alice", "nope"), ("ok-sha", "bob", "bobpw"),
             ("ok-md5", "carol", "carolpw"), ("ok-crypt", "frank", "frankpw"), ("disabled", "dave", "davepw"),
             ("noaccess", "erin", "erinpw"), ("deleted", "gina", "ginapw"), ("unknown", "zed", "x"),
             ("cleartext-entry", "paul", "plainpw"), ("empty-password", "alice", ""),
             ("cluster-other-host", "jack", "jackpw"), ("homedir-and-store", "sam", "sampw"),
             ("mbox-store", "rita", "ritapw"), ("home-missing", "xavier", "xavierpw"),
             ("quota-and-program-entry", "tina", "tinapw"), ("status-nopop", "nora", "norapw"),
             ("status-unknown-value", "hugo", "hugopw"),
             ("status-active-uppercase", "ada", "adapw")]  # fmt: skip
    return [checkpw(f"{prog}-{n}", prog, u, p) for prog in ("auth_pop",) for n, u, p in users]


# -- auth_smtp ---------------------------------------------------------------------------------
def _b64(data: bytes) -> bytes:
    import base64

    return base64.b64encode(data)


def auth_smtp_cases() -> list[Case]:
    """auth_smtp: the record qmail-smtpd writes on its stdin (``login``/``plain`` and base64 fields);
    compare the exit status and the ``K<login>``/``D``/``Z`` answer."""
    down = {"ldapserver": "127.0.0.1:1", "ldaptimeout": "2"}
    login = lambda u, p: b"login\0" + _b64(u) + b"\0" + _b64(p) + b"\0"  # noqa: E731
    plain = lambda raw: b"plain\0" + _b64(raw) + b"\0"  # noqa: E731
    runs: list[tuple[str, bytes, Mapping[str, str | None] | None]] = [
        ("login-ok", login(b"alice", b"alicepw"), None),
        ("login-bad-password", login(b"alice", b"nope"), None),
        ("login-unknown-user", login(b"zed", b"x"), None),
        ("login-empty-password", login(b"alice", b""), None),
        ("login-sha", login(b"bob", b"bobpw"), None),
        ("login-crypt", login(b"frank", b"frankpw"), None),
        ("login-cleartext-entry", login(b"paul", b"plainpw"), None),
        ("login-by-mail-address", login(b"alice@example.org", b"alicepw"), None),
        ("plain-ok", plain(b"\0alice\0alicepw"), None),
        ("plain-authzid", plain(b"alice\0alice\0alicepw"), None),
        ("plain-bad-password", plain(b"\0alice\0nope"), None),
        ("plain-no-password", plain(b"\0alice"), None),
        ("plain-bad-base64", b"plain\0!!!\0", None),
        ("login-missing-field", b"login\0" + _b64(b"alice") + b"\0", None),
        ("unknown-type", b"cram-md5\0abc\0", None),
        ("empty-input", b"", None),
        ("deleted", login(b"gina", b"ginapw"), None),
        ("disabled", login(b"dave", b"davepw"), None),
        ("noaccess", login(b"erin", b"erinpw"), None),
        ("status-nopop", login(b"nora", b"norapw"), None),
        ("ldap-down", login(b"alice", b"alicepw"), down),
    ]
    return [simple("auth_smtp", n, "auth_smtp", [], stdin, controls=c) for n, stdin, c in runs]


# -- qmail-cdb ---------------------------------------------------------------------------------
def cdb_case(name: str, text: bytes) -> Case:
    def run(world: World) -> Observed:
        d = world.scratch("cdb-" + name)
        out = []
        for side, exe in (("c", world.c("qmail-cdb")), ("q", world.q("qmail-cdb"))):
            r = world.run([exe, str(d / f"{side}.cdb"), str(d / f"{side}.tmp")], text)
            data = (d / f"{side}.cdb").read_bytes() if (d / f"{side}.cdb").exists() else b"<none>"
            out.append(f"exit {r.rc}\n{data.hex()}")
        return Observed(out[0], out[1])

    return Case("cdb", name, run, parallel=True)


def cdb_cases() -> list[Case]:
    return [
        cdb_case("empty", b""),
        cdb_case("domains", b"example.org\nexample.net\n.sub.example.org\n"),
        cdb_case("case-and-blanks", b"Example.ORG  \n\tTabbed.Example\t\nlast-no-newline"),
        cdb_case("comments-and-empty", b"# a comment\n\nexample.org\n#x\n"),
        cdb_case("cr-kept", b"example.org\r\n"),
        cdb_case("duplicates", b"a.example\na.example\nA.EXAMPLE\n"),
        cdb_case("many", b"".join(b"host%d.example.org\n" % i for i in range(300))),
    ]


def cases() -> list[Case]:
    return [*verify_cases(), *lookup_cases(), *digest_cases(), *checkpw_cases(), *auth_smtp_cases(),
            *cdb_cases()]

"""Run a private OpenLDAP slapd with the qmail schema on 127.0.0.1, for tests and local trials.

Why a real slapd and not a mock: qldap's LDAP behaviour (case-insensitive matching, SINGLE-VALUE
rejections, filters) is decided by the server and the schema, so tests must talk to the real thing.

Everything lives in one state directory: the generated configuration (``slapd.conf``, or a
``slapd.d`` built with ``slapadd -n0`` for the cn=config form), the mdb database (``db/``), the
pidfile, slapd's own output (``slapd.log``) and ``qldap-slapd.json`` with the settings, so that a
later process (``tools/slapd status|stop``) can find the server again.  slapd runs in the foreground
(``-d none``: only errors are written), listens on ``ldap://127.0.0.1:PORT/`` only, and is started
in its own session so it outlives the command that started it.

Only the standard library is used, so ``tools/slapd`` works without the project's venv.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ROOT_DIR = Path(__file__).resolve().parent.parent
QMAIL_SCHEMA = ROOT_DIR / "schema" / "qmail.schema"
QMAIL_LDIF = ROOT_DIR / "schema" / "qmail.ldif"
SYSTEM_SCHEMA_DIR = Path("/etc/ldap/schema")
SYSTEM_SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
MODULE_DIR = Path("/usr/lib/ldap")
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
PROGRAMS = ("slapd", "slapadd", "slaptest", "ldapadd", "ldapmodify", "ldapsearch", "ldapdelete")
INDEXED = ("objectClass", "mail", "mailAlternateAddress", "uid")
QMAIL_INDEXED = ("mailAlternateAddress",)
STATE_FILE = "qldap-slapd.json"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0

SchemaForm = Literal["schema", "ldif"]

# An anonymous simple bind (messageID 1, LDAPv3): the smallest request every slapd answers.
_ANON_BIND = bytes.fromhex("300c020101600702010304008000")


class SlapdError(RuntimeError):
    """slapd or one of its tools failed; the message carries their output."""


class SlapdNotInstalled(SlapdError):
    """A program of the slapd/ldap-utils packages is missing."""


def find_program(name: str) -> str | None:
    """Return the path of *name* from PATH plus the sbin directories, or None.

    ``QLDAP_SLAPD`` names the slapd binary explicitly (its directory is searched first for the
    other programs); pointing it at a missing file makes slapd count as not installed.
    """
    override = os.environ.get("QLDAP_SLAPD")
    if override and name == "slapd":
        return override if os.access(override, os.X_OK) else None
    dirs = os.environ.get("PATH", "").split(os.pathsep) + list(SBIN_DIRS)
    if override:
        dirs.insert(0, str(Path(override).parent))
    return shutil.which(name, path=os.pathsep.join(d for d in dirs if d))


def missing_programs() -> list[str]:
    """Names of the needed programs that cannot be found; empty when slapd is usable."""
    return [p for p in PROGRAMS if find_program(p) is None]


def _program(name: str) -> str:
    path = find_program(name)
    if path is None:
        raise SlapdNotInstalled(f"{name} not found (install the slapd and ldap-utils packages)")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def normalize_dn(dn: str) -> str:
    """Lower-case *dn* and drop blanks around ``,`` and ``=`` (enough to compare simple DNs)."""
    return re.sub(r"\s*([,=])\s*", r"\1", dn.strip()).lower()


def ldif_dns(text: str) -> list[str]:
    """The DNs of the records in LDIF *text* (continuation lines and ``dn::`` base64 handled)."""
    unfolded = re.sub(r"\r?\n ", "", text)
    dns = []
    for line in unfolded.splitlines():
        if line.lower().startswith("dn::"):
            dns.append(base64.b64decode(line[4:].strip()).decode("utf-8"))
        elif line.lower().startswith("dn:"):
            dns.append(line[3:].strip())
    return dns


def suffix_entry(suffix: str) -> str:
    """LDIF for the suffix entry itself, chosen by the attribute of its first RDN.

    Raises:
        SlapdError: the RDN attribute is not one of dc, o, ou, c.
    """
    rdn = re.split(r"(?<!\\),", suffix, maxsplit=1)[0]
    attr, _, value = rdn.partition("=")
    attr, value = attr.strip().lower(), value.strip()
    classes = {
        "dc": ("dcObject", "organization"),
        "o": ("organization",),
        "ou": ("organizationalUnit",),
        "c": ("country",),
    }.get(attr)
    if classes is None or not value:
        raise SlapdError(f"cannot create a suffix entry for {suffix!r}; put it in the LDIF")
    lines = [f"dn: {suffix}", *(f"objectClass: {c}" for c in classes), f"{attr}: {value}"]
    if attr == "dc":
        lines.append(f"o: {value}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throw-away CA and one certificate it signed (with its key)."""

    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SlapdNotInstalled("openssl not found (install the openssl package)")
    proc = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SlapdError(f"openssl {' '.join(args)} failed:\n{proc.stderr.strip()}")


def make_test_ca(directory: Path, names: Sequence[str], *, client: bool = False) -> TlsFiles:
    """A certificate for *names* (DNS names or IP addresses) signed by the test CA of *directory*.

    The CA (``ca.pem``/``ca.key``) is created on the first call for a directory and reused after, so
    a server and a client certificate can share it.  The certificate is for a server (serverAuth,
    ``server.pem``) or, with *client*, for a client (clientAuth, ``client.pem``).  EC P-256 keys and a
    2-day validity keep it quick; only the openssl command line is used, so tools/slapd stays
    standard-library Python.

    Raises:
        SlapdNotInstalled: openssl is missing.
        SlapdError: an openssl command failed.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    if not (d / "ca.pem").exists():
        _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                 "-subj", "/CN=qldap test CA", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    stem = "client" if client else "server"
    alt = ",".join(f"IP:{n}" if re.fullmatch(r"[\d.]+|[\da-fA-F:]*:[\da-fA-F:]*", n) else f"DNS:{n}"
                   for n in names)
    (d / f"{stem}.ext").write_text(f"subjectAltName={alt}\nbasicConstraints=CA:FALSE\n"
                                   f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}\n")
    _openssl("req", *ec, "-keyout", f"{stem}.key", "-out", f"{stem}.csr", "-subj", f"/CN={names[0]}", cwd=d)
    _openssl("x509", "-req", "-in", f"{stem}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{stem}.pem", "-days", "2", "-extfile", f"{stem}.ext", cwd=d)
    (d / f"{stem}.key").chmod(0o600)
    return TlsFiles(d / "ca.pem", d / f"{stem}.pem", d / f"{stem}.key")


def _pid_alive(pid: int) -> bool:
    """True while *pid* exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _die_with_parent() -> Callable[[], None]:
    """A preexec hook that makes the child get SIGTERM when the starting process dies."""
    libc = ctypes.CDLL(None, use_errno=True)

    def hook() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return hook


def _ldap_answers(host: str, port: int) -> bool:
    """True when an LDAP server on host:port answers an anonymous bind."""
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.sendall(_ANON_BIND)
            reply = s.recv(64)
    except OSError:
        return False
    return len(reply) > 2 and reply[0] == 0x30 and b"\x61" in reply[:8]


class Slapd:
    """One private slapd: configure, bulk-load, start, stop, and talk to it as rootdn.

    Settings given here are stored in the state directory on start; :meth:`from_state_dir`
    recovers them in another process.  LDIF files (and *initial_ldif*) are bulk-loaded with
    ``slapadd -q`` at the first start of this object, before slapd runs.  *qmail_schema=False*
    leaves our schema out (to test loading it later); *ldapi=True* also listens on a unix socket in
    the state dir, where root may modify cn=config with ``-Y EXTERNAL`` (cn=config form only).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int | None = None,
        suffix: str = "dc=example,dc=com",
        rootdn: str = "cn=admin,dc=example,dc=com",
        rootpw: str = "rootsecret",
        ldif: Sequence[Path] = (),
        initial_ldif: str = "",
        schema_form: SchemaForm = "schema",
        qmail_schema: bool = True,
        ldapi: bool = False,
        tie_to_parent: bool = False,
        tls: TlsFiles | None = None,
        tls_port: int | None = None,
        verify_client: str = "never",
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self._auto_port = port is None
        self.port = free_port() if port is None else port
        self.suffix, self.rootdn, self.rootpw = suffix, rootdn, rootpw
        self.schema_form: SchemaForm = schema_form
        self._pending = [Path(p).read_text() for p in ldif] + ([initial_ldif] if initial_ldif else [])
        self.qmail_schema, self.ldapi = qmail_schema, ldapi
        self.tls, self.verify_client = tls, verify_client
        self.tls_port = (free_port() if tls_port is None else tls_port) if tls is not None else None
        self._auto_tls_port = tls_port is None
        self._tie_to_parent = tie_to_parent
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_state_dir(cls, state_dir: Path) -> Slapd:
        """The Slapd last started from *state_dir*.

        Raises:
            SlapdError: the directory holds no (readable) settings file.
        """
        path = Path(state_dir) / STATE_FILE
        try:
            st = json.loads(path.read_text())
            form: SchemaForm = "ldif" if st["schema_form"] == "ldif" else "schema"
            return cls(state_dir, port=int(st["port"]), suffix=str(st["suffix"]),
                       rootdn=str(st["rootdn"]), rootpw=str(st["rootpw"]), schema_form=form)
        except (OSError, ValueError, KeyError) as e:
            raise SlapdError(f"{path}: no usable slapd state ({e})")

    @property
    def url(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.state_dir / "slapd.pid"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "slapd.log"

    @property
    def pid(self) -> int | None:
        """pid of the running slapd, or None."""
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        try:
            pid = int(self.pidfile.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        return pid if b"slapd" in cmdline and _pid_alive(pid) else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    # ---- configuration

    def _ours(self, path: Path) -> list[Path]:
        return [path] if self.qmail_schema else []

    @property
    def _indexed(self) -> str:
        return ",".join(a for a in INDEXED if self.qmail_schema or a not in QMAIL_INDEXED)

    @property
    def ldapi_url(self) -> str:
        """``ldapi://`` URL of the unix socket in the state dir (listened on only with ldapi=True)."""
        return "ldapi://" + str(self.state_dir / "ldapi").replace("/", "%2F")

    def _config_args(self) -> list[str]:
        if self.schema_form == "ldif":
            return ["-F", str(self.state_dir / "slapd.d")]
        return ["-f", str(self.state_dir / "slapd.conf")]

    def slapd_conf(self) -> str:
        """The slapd.conf text for this instance."""
        includes = [SYSTEM_SCHEMA_DIR / f"{n}.schema" for n in SYSTEM_SCHEMAS] + self._ours(QMAIL_SCHEMA)
        lines = [f"include {p}" for p in includes] + [
            f"pidfile {self.pidfile}",
            f"argsfile {self.state_dir / 'slapd.args'}",
            f"modulepath {MODULE_DIR}",
            "moduleload back_mdb",
            "loglevel none",
            *self._tls_directives(),
            "database mdb",
            f'suffix "{self.suffix}"',
            f'rootdn "{self.rootdn}"',
            f"rootpw {self.rootpw}",
            f"directory {self.state_dir / 'db'}",
            "maxsize 268435456",
            f"index {self._indexed} eq",
        ]
        return "\n".join(lines) + "\n"

    def _tls_directives(self) -> list[str]:
        """slapd.conf TLS lines (``TLSCACertificateFile …``); olc-prefixed they are the cn=config ones."""
        if self.tls is None:
            return []
        return [f"TLSCACertificateFile {self.tls.ca}", f"TLSCertificateFile {self.tls.cert}",
                f"TLSCertificateKeyFile {self.tls.key}", f"TLSVerifyClient {self.verify_client}"]

    @property
    def ldaps_url(self) -> str:
        """``ldaps://127.0.0.1:PORT`` (listened on only with TLS files)."""
        return f"ldaps://{self.host}:{self.tls_port}"

    def config_ldif(self) -> str:
        """The cn=config LDIF (with schema includes) that ``slapadd -n0`` turns into slapd.d."""
        schemas = [SYSTEM_SCHEMA_DIR / f"{n}.ldif" for n in SYSTEM_SCHEMAS] + self._ours(QMAIL_LDIF)
        records = [
            f"dn: cn=config\nobjectClass: olcGlobal\ncn: config\nolcPidFile: {self.pidfile}\n"
            f"olcArgsFile: {self.state_dir / 'slapd.args'}\nolcLogLevel: none\n"
            + "".join(f"olc{line.replace(' ', ': ', 1)}\n" for line in self._tls_directives()),
            f"dn: cn=module{{0}},cn=config\nobjectClass: olcModuleList\ncn: module{{0}}\n"
            f"olcModulePath: {MODULE_DIR}\nolcModuleLoad: back_mdb\n",
            "dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n",
            *(f"include: {p.as_uri()}\n" for p in schemas),
            "dn: olcDatabase={-1}frontend,cn=config\nobjectClass: olcDatabaseConfig\n"
            "objectClass: olcFrontendConfig\nolcDatabase: {-1}frontend\n",
            "dn: olcDatabase={0}config,cn=config\nobjectClass: olcDatabaseConfig\n"
            "olcDatabase: {0}config\nolcAccess: to * by dn.exact=gidNumber=0+uidNumber=0,"
            "cn=peercred,cn=external,cn=auth manage by * none\n",
            f"dn: olcDatabase={{1}}mdb,cn=config\nobjectClass: olcDatabaseConfig\n"
            f"objectClass: olcMdbConfig\nolcDatabase: {{1}}mdb\nolcSuffix: {self.suffix}\n"
            f"olcRootDN: {self.rootdn}\nolcRootPW: {self.rootpw}\n"
            f"olcDbDirectory: {self.state_dir / 'db'}\nolcDbMaxSize: 268435456\n"
            f"olcDbIndex: {self._indexed} eq\n",
        ]
        return "\n".join(records)

    def configure(self) -> None:
        """Write the configuration (and build slapd.d for the cn=config form) without starting.

        Raises:
            SlapdError: ``slapadd -n0`` rejected the cn=config LDIF.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "db").mkdir(exist_ok=True)
        (self.state_dir / "db").chmod(0o700)
        secret = self.state_dir / "rootpw"
        secret.touch(mode=0o600)
        secret.write_text(self.rootpw)  # ldap tools read it with -y: no newline
        if self.schema_form == "ldif":
            confdir = self.state_dir / "slapd.d"
            shutil.rmtree(confdir, ignore_errors=True)
            confdir.mkdir(mode=0o700)
            src = self.state_dir / "config.ldif"
            src.write_text(self.config_ldif())
            self._run([_program("slapadd"), "-n0", "-F", str(confdir), "-l", str(src)])
        else:
            conf = self.state_dir / "slapd.conf"
            conf.touch(mode=0o600)
            conf.write_text(self.slapd_conf())
        state = {"port": self.port, "suffix": self.suffix, "rootdn": self.rootdn,
                 "rootpw": self.rootpw, "schema_form": self.schema_form}
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")

    def _bulk_load(self) -> None:
        """slapadd the pending LDIF, creating the suffix entry first on a new database."""
        fresh = not (self.state_dir / "db" / "data.mdb").exists()
        texts = self._pending
        wanted = normalize_dn(self.suffix)
        if fresh and not any(normalize_dn(dn) == wanted for t in texts for dn in ldif_dns(t)):
            texts = [suffix_entry(self.suffix), *texts]
        for n, text in enumerate(texts):
            src = self.state_dir / f"load-{n}.ldif"
            src.write_text(text)
            self._run([_program("slapadd"), *self._config_args(), "-q", "-b", self.suffix, "-l", str(src)])
            src.unlink()
        self._pending = []

    @staticmethod
    def _run(argv: list[str], stdin: str | None = None) -> str:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SlapdError(f"{' '.join(argv)} failed (exit {proc.returncode}):\n"
                             f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    # ---- life cycle

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Configure and load if needed, start slapd, and return once it answers on the port.

        Raises:
            SlapdNotInstalled: slapd or slapadd is missing.
            SlapdError: slapd is already running, exited, or did not answer in *timeout* seconds;
                the message includes slapd's output.
        """
        if self.running:
            raise SlapdError(f"slapd already running at {self.url} (pid {self.pid})")
        self.configure()
        self._bulk_load()
        for _attempt in range(5):
            try:
                self._launch(timeout)
                return
            except SlapdError as e:
                # a port picked by us may have been taken meanwhile: pick another one
                if not (self._auto_port and "Address already in use" in str(e)):
                    raise
                self.port = free_port()
                if self.tls is not None and self._auto_tls_port:
                    self.tls_port = free_port()
                self.configure()
        raise SlapdError("no free port found for slapd")

    def _launch(self, timeout: float) -> None:
        self.pidfile.unlink(missing_ok=True)
        urls = f"ldap://{self.host}:{self.port}/" + (f" {self.ldapi_url}/" if self.ldapi else "")
        if self.tls is not None:
            urls += f" {self.ldaps_url}/"
        argv = [_program("slapd"), "-d", "none", "-h", urls,
                *self._config_args()]
        with self.log_path.open("ab") as log:
            offset = log.tell()
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                preexec_fn=_die_with_parent() if self._tie_to_parent else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                rc, self._proc = self._proc.returncode, None
                raise SlapdError(f"slapd exited with status {rc} on {self.url}:\n{self._log_since(offset)}")
            if _ldap_answers(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        output = self._log_since(offset)
        raise SlapdError(f"slapd did not answer on {self.url} within {timeout:g}s:\n{output}")

    def _log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace").strip() or "(no output)"

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM slapd and wait until it has exited; nothing to do when it is not running.

        Raises:
            SlapdError: it had to be killed with SIGKILL after *timeout* seconds.
        """
        pid = self.pid
        if pid is None:
            self._proc = None
            return
        os.kill(pid, signal.SIGTERM)
        if self._wait_gone(pid, timeout):
            return
        os.kill(pid, signal.SIGKILL)
        self._wait_gone(pid, 5)
        self.pidfile.unlink(missing_ok=True)
        raise SlapdError(f"slapd (pid {pid}) ignored SIGTERM for {timeout:g}s and was killed")

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            self._proc = None
            return True
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self._auto_port = self._auto_tls_port = False
        self.start()

    # ---- talking to it

    def _client(self, program: str) -> list[str]:
        return [_program(program), "-x", "-H", self.url, "-D", self.rootdn,
                "-y", str(self.state_dir / "rootpw")]

    def add_ldif(self, text: str) -> None:
        """ldapadd *text* over TCP as rootdn.

        Raises:
            SlapdError: ldapadd failed; the message has its diagnostics.
        """
        self._run(self._client("ldapadd"), stdin=text)

    def modify_ldif(self, text: str) -> None:
        """ldapmodify *text* (changetype records) over TCP as rootdn.

        Raises:
            SlapdError: ldapmodify failed; the message has its diagnostics.
        """
        self._run(self._client("ldapmodify"), stdin=text)

    def delete_tree(self, dn: str) -> None:
        """Delete *dn* and everything below it.

        Raises:
            SlapdError: ldapdelete failed.
        """
        self._run([*self._client("ldapdelete"), "-r", dn])

    def search(self, base: str, filterstr: str = "(objectClass=*)", *attrs: str,
               scope: str = "sub") -> str:
        """ldapsearch as rootdn; the LDIF result (``-LLL``, lines unfolded).

        Raises:
            SlapdError: ldapsearch failed (also for a missing base).
        """
        return self._run([*self._client("ldapsearch"), "-LLL", "-o", "ldif-wrap=no",
                          "-s", scope, "-b", base, filterstr, *attrs])

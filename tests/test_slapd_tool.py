"""tools/slapd and qldap_slapd.Slapd: start/status/stop, bulk load, restart, and the pytest fixtures."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from qldap_slapd import Slapd, SlapdError, find_program, ldif_dns, normalize_dn, suffix_entry

from tests.fixtures_slapd import LdapBase, SlapdFactory, require_slapd

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "slapd"

USERS = """\
dn: ou=people,dc=example,dc=com
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,dc=example,dc=com
objectClass: account
objectClass: qmailUser
uid: alice
mail: alice@example.com
mailMessageStore: /var/mail/alice/
"""


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TOOL), *args], capture_output=True, text=True, check=False, timeout=120)


def _ldapsearch(url: str, base: str, flt: str, *attrs: str) -> subprocess.CompletedProcess[str]:
    prog = find_program("ldapsearch")
    assert prog is not None
    argv = [prog, "-x", "-LLL", "-H", url, "-D", "cn=admin,dc=example,dc=com", "-w", "rootsecret",
            "-b", base, flt, *attrs]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def statedir(tmp_path: Path) -> Iterator[Path]:
    """A state directory for tools/slapd; whatever a test leaves running there is stopped."""
    require_slapd()
    d = tmp_path / "state"
    yield d
    _tool("stop", "--dir", str(d))


# ---- pure helpers


def test_suffix_entry_depends_on_the_first_rdn() -> None:
    assert suffix_entry("dc=example,dc=com") == (
        "dn: dc=example,dc=com\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: example\n")
    assert suffix_entry("o=isp") == "dn: o=isp\nobjectClass: organization\no: isp\n"
    assert "objectClass: organizationalUnit\nou: mail\n" in suffix_entry("ou=mail,o=isp")
    with pytest.raises(SlapdError, match="cannot create a suffix entry"):
        suffix_entry("cn=somebody")


def test_ldif_dns_handles_folding_and_base64() -> None:
    encoded = base64.b64encode("uid=jörg,o=isp".encode()).decode()
    text = f"version: 1\n\ndn: uid=alice,\n dc=example,dc=com\nuid: alice\n\ndn:: {encoded}\nuid: j\n"
    assert ldif_dns(text) == ["uid=alice,dc=example,dc=com", "uid=jörg,o=isp"]
    assert normalize_dn(" DC=Example , dc = COM ") == "dc=example,dc=com"


# ---- the CLI


def test_cli_start_status_stop(statedir: Path) -> None:
    started = _tool("start", "--dir", str(statedir))
    assert started.returncode == 0, started.stderr
    url = started.stdout.splitlines()[0]
    assert url.startswith("ldap://127.0.0.1:")
    port = int(url.rsplit(":", 1)[1])

    status = _tool("status", "--dir", str(statedir))
    assert (status.returncode, status.stdout.split()[:2]) == (0, ["running", url])
    found = _ldapsearch(url, "dc=example,dc=com", "(objectClass=dcObject)", "dc")
    assert found.returncode == 0, found.stderr
    assert "dn: dc=example,dc=com\ndc: example" in found.stdout

    again = _tool("start", "--dir", str(statedir))
    assert again.returncode == 111 and "already running" in again.stderr

    stopped = _tool("stop", "--dir", str(statedir))
    assert stopped.returncode == 0, stopped.stderr
    assert _refused(port)
    status = _tool("status", "--dir", str(statedir))
    assert (status.returncode, status.stdout.strip()) == (1, "stopped")


def test_cli_status_of_an_unused_directory(tmp_path: Path) -> None:
    status = _tool("status", "--dir", str(tmp_path / "nothing"))
    assert status.returncode == 1 and "not running" in status.stdout


@pytest.mark.parametrize("form", ["schema", "ldif"])
def test_cli_bulk_loads_ldif_and_keeps_data_across_restart(statedir: Path, tmp_path: Path, form: str) -> None:
    ldif = tmp_path / "users.ldif"
    ldif.write_text(USERS)
    started = _tool("start", "--dir", str(statedir), "--ldif", str(ldif), "--schema-form", form)
    assert started.returncode == 0, started.stderr
    url = started.stdout.splitlines()[0]
    found = _ldapsearch(url, "dc=example,dc=com", "(mail=ALICE@example.com)", "mailMessageStore")
    assert found.stdout == "dn: uid=alice,ou=people,dc=example,dc=com\nmailMessageStore: /var/mail/alice/\n\n"
    # the suffix entry was created because the LDIF lacks it
    assert "dn: dc=example,dc=com" in _ldapsearch(url, "dc=example,dc=com", "(dc=example)").stdout

    assert _tool("stop", "--dir", str(statedir)).returncode == 0
    restarted = _tool("start", "--dir", str(statedir))
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.splitlines()[0] == url  # same port
    found = _ldapsearch(url, "dc=example,dc=com", "(uid=alice)", "mail")
    assert found.stdout == "dn: uid=alice,ou=people,dc=example,dc=com\nmail: alice@example.com\n\n"


def test_cli_uses_an_ldif_that_brings_its_own_suffix_entry(statedir: Path, tmp_path: Path) -> None:
    ldif = tmp_path / "isp.ldif"
    ldif.write_text("dn: o=isp\nobjectClass: organization\no: isp\ndescription: from the file\n\n"
                    "dn: uid=bob,o=isp\nobjectClass: account\nuid: bob\n")
    started = _tool("start", "--dir", str(statedir), "--suffix", "o=isp", "--rootdn", "cn=root,o=isp",
                    "--rootpw", "pw2", "--ldif", str(ldif))
    assert started.returncode == 0, started.stderr
    prog = find_program("ldapsearch")
    assert prog is not None
    found = subprocess.run([prog, "-x", "-LLL", "-H", started.stdout.splitlines()[0], "-D", "cn=root,o=isp",
                            "-w", "pw2", "-b", "o=isp", "(objectClass=*)", "description"],
                           capture_output=True, text=True, check=False)
    assert found.stdout == "dn: o=isp\ndescription: from the file\n\ndn: uid=bob,o=isp\n\n"


def test_cli_reports_a_broken_ldif(statedir: Path, tmp_path: Path) -> None:
    ldif = tmp_path / "bad.ldif"
    ldif.write_text("dn: uid=x,dc=example,dc=com\nobjectClass: account\nuid: x\nqmailUID: notanumber\n")
    started = _tool("start", "--dir", str(statedir), "--ldif", str(ldif))
    assert started.returncode == 111
    assert "slapadd" in started.stderr and "qmailUID" in started.stderr
    assert started.stdout == ""


# ---- the library


def test_start_fails_clearly_when_the_port_is_taken(tmp_path: Path) -> None:
    require_slapd()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = Slapd(tmp_path / "st", port=port)
        with pytest.raises(SlapdError) as err:
            server.start()
    assert f"ldap://127.0.0.1:{port}" in str(err.value)
    assert "Address already in use" in str(err.value)  # slapd's own output is included
    assert not server.running


def test_restart_keeps_port_and_data(slapd_factory: SlapdFactory) -> None:
    server = slapd_factory(initial_ldif=USERS)
    port, pid = server.port, server.pid
    server.add_ldif("dn: uid=carol,ou=people,dc=example,dc=com\nobjectClass: account\nuid: carol\n")
    server.restart()
    assert (server.port, server.running) == (port, True)
    assert server.pid != pid
    assert "dn: uid=carol,ou=people,dc=example,dc=com" in server.search("dc=example,dc=com", "(uid=carol)")
    assert "dn: uid=alice,ou=people,dc=example,dc=com" in server.search("dc=example,dc=com", "(uid=alice)")


def test_stop_is_seen_by_another_instance(slapd_factory: SlapdFactory) -> None:
    server = slapd_factory()
    other = Slapd.from_state_dir(server.state_dir)
    assert (other.url, other.pid) == (server.url, server.pid)
    other.stop()
    assert not server.running and not other.running
    assert _refused(server.port)


def test_modify_ldif_and_errors_from_ldap_tools(slapd_factory: SlapdFactory) -> None:
    server = slapd_factory(initial_ldif=USERS)
    server.modify_ldif("dn: uid=alice,ou=people,dc=example,dc=com\nchangetype: modify\n"
                       "replace: mailMessageStore\nmailMessageStore: /srv/mail/alice/\n")
    assert "mailMessageStore: /srv/mail/alice/" in server.search("ou=people,dc=example,dc=com", "(uid=alice)")
    with pytest.raises(SlapdError, match="Already exists"):
        server.add_ldif("dn: ou=people,dc=example,dc=com\nobjectClass: organizationalUnit\nou: people\n")


# ---- the fixtures


def test_session_server_is_shared_and_running(slapd: Slapd, ldap_base: LdapBase) -> None:
    assert ldap_base.slapd is slapd and slapd.running
    assert (slapd.suffix, slapd.rootdn, slapd.rootpw) == ("dc=example,dc=com", "cn=admin,dc=example,dc=com",
                                                           "rootsecret")
    assert slapd.url == f"ldap://127.0.0.1:{slapd.port}"


@pytest.mark.parametrize("run", [1, 2])
def test_ldap_base_is_a_fresh_subtree(ldap_base: LdapBase, run: int) -> None:
    assert ldap_base.dn.startswith("ou=t") and ldap_base.dn.endswith(",dc=example,dc=com")
    assert ldap_base.slapd.search(ldap_base.dn, scope="one") == ""  # empty, whichever run comes first
    ldap_base.load("dn: uid=isolation-probe,{base}\nobjectClass: account\nuid: isolation-probe\n")
    # the other run's probe is gone: its subtree was deleted at its teardown
    found = ldap_base.slapd.search("dc=example,dc=com", "(uid=isolation-probe)", "1.1")
    assert found.split() == ["dn:", f"uid=isolation-probe,{ldap_base.dn}"]


def _run_pytest(tmp_path: Path, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_probe.py").write_text(textwrap.dedent("""\
        def test_needs_slapd(slapd):
            assert slapd.running
    """))
    env = {k: v for k, v in os.environ.items() if k != "QLDAP_REQUIRE_SLAPD"}
    env.update(PYTHONPATH=str(ROOT), QLDAP_SLAPD=str(tmp_path / "no-such-slapd"), **env_extra)
    argv = [sys.executable, "-m", "pytest", "-p", "tests.fixtures_slapd", "-p", "no:cacheprovider",
            "-rs", "-q", "test_probe.py"]
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
                          timeout=120)


def test_missing_slapd_skips_with_a_reason(tmp_path: Path) -> None:
    result = _run_pytest(tmp_path, {})
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout and "not found: slapd" in result.stdout


def test_missing_slapd_fails_when_required(tmp_path: Path) -> None:
    result = _run_pytest(tmp_path, {"QLDAP_REQUIRE_SLAPD": "1"})
    assert result.returncode == 1, result.stdout
    assert "1 error" in result.stdout
    assert "QLDAP_REQUIRE_SLAPD=1: needs a real OpenLDAP slapd" in result.stdout

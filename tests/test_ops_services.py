"""services.yaml validation: what is accepted, and the clear error for each kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from qldap.control.services import Daemon, Listen, load_services, parse_listen, parse_services
from qldap.errors import ConfigError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "tcp.smtp").write_text('127.:allow,RELAYCLIENT=""\n:allow\n')
    return tmp_path


def error_of(text: str, root: Path) -> str:
    with pytest.raises(ConfigError) as info:
        parse_services(text, root)
    return str(info.value)


def test_the_readme_example_parses(root: Path) -> None:
    services = parse_services("""\
smtpd:                       # one or more listeners
  listen: ["127.0.0.1:2525"]
  rules: control/tcp.smtp
  env: {RCPTCHECK: "", LOGLEVEL: "3"}
send: {}
pop3d:
  listen: ["127.0.0.1:1110"]
  env: {}
pbsdbd: {}
""", root)
    assert [s.daemon for s in services.specs] == [Daemon.SMTPD, Daemon.SEND, Daemon.POP3D, Daemon.PBSDBD]
    smtpd = services.get(Daemon.SMTPD)
    assert smtpd is not None
    assert smtpd.listen == (Listen("127.0.0.1", 2525),)
    assert smtpd.rules == root / "control" / "tcp.smtp"
    assert smtpd.env == (("RCPTCHECK", ""), ("LOGLEVEL", "3"))
    pop3d = services.get(Daemon.POP3D)
    assert pop3d is not None and pop3d.env == () and pop3d.rules is None


def test_sections_come_out_in_start_order_and_absent_ones_are_not_started(root: Path) -> None:
    services = parse_services('pop3d: {listen: ["127.0.0.1:1110"]}\nsend:\n', root)
    assert [s.name for s in services.specs] == ["send", "pop3d"]
    assert services.get(Daemon.SMTPD) is None


@pytest.mark.parametrize("text", ["", "\n", "# nothing here\n", "---\n"])
def test_an_empty_file_starts_no_daemon(text: str, root: Path) -> None:
    assert parse_services(text, root).specs == ()


def test_ipv6_and_host_names_listen(root: Path) -> None:
    text = 'smtpd: {listen: ["[::1]:25", "mx.example.com:2525", "0.0.0.0:25"]}'
    smtpd = parse_services(text, root).specs[0]
    assert smtpd.listen == (Listen("::1", 25), Listen("mx.example.com", 2525), Listen("0.0.0.0", 25))
    assert [str(a) for a in smtpd.listen] == ["[::1]:25", "mx.example.com:2525", "0.0.0.0:25"]


def test_unknown_section(root: Path) -> None:
    assert error_of("smtp:\n  listen: []\n", root) == (
        "services.yaml: unknown section 'smtp'; allowed: smtpd, send, pop3d, pbsdbd, qmqpd (line 1)"
    )


def test_unknown_key(root: Path) -> None:
    assert error_of('send: {}\nsmtpd:\n  lisen: ["127.0.0.1:25"]\n', root) == (
        "services.yaml: smtpd: unknown key 'lisen'; allowed: listen, rules, env, metrics, limits, processes "
        "(line 3)"
    )


def test_key_allowed_elsewhere_is_refused_where_it_makes_no_sense(root: Path) -> None:
    assert error_of('send:\n  listen: ["127.0.0.1:25"]\n', root) == (
        "services.yaml: send: unknown key 'listen'; allowed: env, metrics (line 2)"
    )
    assert "pop3d: unknown key 'rules'; allowed: listen, env, metrics, limits" in error_of(
        'pop3d: {listen: ["127.0.0.1:110"], rules: control/tcp.smtp}', root
    )


@pytest.mark.parametrize(
    ("addr", "reason"),
    [
        ("127.0.0.1", "'127.0.0.1' is not HOST:PORT"),
        (":25", "':25' is not HOST:PORT"),
        ("::1:25", "'::1:25': write IPv6 addresses in brackets, as [::1]:25"),
        ("[::1]25", "'[::1]25' is not [IPV6]:PORT"),
        ("[zz::1]:25", "'zz::1' in '[zz::1]:25' is not an IPv6 address"),
        ("300.1.1.1:25", "'300.1.1.1' in '300.1.1.1:25' is not an IPv4 address"),
        ("bad_host:25", "'bad_host' in 'bad_host:25' is not an IP address or host name"),
    ],
)
def test_bad_listen_forms(addr: str, reason: str, root: Path) -> None:
    expected = f"services.yaml: smtpd: listen: {reason} (line 2)"
    assert error_of(f'smtpd:\n  listen: ["{addr}"]\n', root) == expected


@pytest.mark.parametrize(
    ("port", "reason"),
    [("0", "port 0 in '127.0.0.1:0' is not in 1-65535"),
     ("65536", "port 65536 in '127.0.0.1:65536' is not in 1-65535"),
     ("smtp", "port 'smtp' in '127.0.0.1:smtp' is not a number"),
     ("-1", "port '-1' in '127.0.0.1:-1' is not a number")],
)
def test_bad_ports(port: str, reason: str, root: Path) -> None:
    expected = f"services.yaml: smtpd: listen: {reason} (line 1)"
    assert error_of(f'smtpd: {{listen: ["127.0.0.1:{port}"]}}', root) == expected


def test_parse_listen_edges() -> None:
    assert parse_listen("127.0.0.1:65535") == Listen("127.0.0.1", 65535)
    assert parse_listen("[2001:db8::1]:1") == Listen("2001:db8::1", 1)


def test_listen_not_a_list_and_not_strings(root: Path) -> None:
    assert error_of("smtpd:\n  listen: {a: 1}\n", root) == (
        'services.yaml: smtpd: listen: must be a list of "HOST:PORT", not a mapping (line 2)'
    )
    assert error_of("smtpd:\n  listen: [2525]\n", root) == (
        'services.yaml: smtpd: listen: must be a string, not an integer (quote it: "2525") (line 2)'
    )


def test_listen_is_required_for_network_daemons(root: Path) -> None:
    assert error_of("pop3d: {}\n", root) == (
        'services.yaml: pop3d: listen: required: a list of "HOST:PORT" addresses (line 1)'
    )
    assert "smtpd: listen: required" in error_of("smtpd:\n  listen: []\n", root)


def test_the_same_address_twice(root: Path) -> None:
    assert "smtpd: listen: '127.0.0.1:25' is listed twice" in error_of(
        'smtpd: {listen: ["127.0.0.1:25", "127.0.0.1:25"]}', root
    )
    assert error_of('smtpd: {listen: ["127.0.0.1:25"]}\npop3d: {listen: ["127.0.0.1:25"]}', root) == (
        "services.yaml: pop3d: listen: 127.0.0.1:25 is already used by smtpd"
    )


@pytest.mark.parametrize(
    ("value", "kind"),
    [("3", 'an integer (quote it: "3")'), ("no", 'a boolean (quote it: "no")'),
     ("1.5", 'a number (quote it: "1.5")'), ("~", "empty (null)"), ("[a]", "a list")],
)
def test_env_values_must_be_strings(value: str, kind: str, root: Path) -> None:
    assert error_of(f"send:\n  env:\n    LOGLEVEL: {value}\n", root) == (
        f"services.yaml: send: env: LOGLEVEL: must be a string, not {kind} (line 3)"
    )


def test_env_names_and_shape(root: Path) -> None:
    assert error_of('send: {env: {"BAD-NAME": "x"}}', root) == (
        "services.yaml: send: env: 'BAD-NAME' is not a variable name (letters, digits, _) (line 1)"
    )
    assert error_of("send: {env: [A]}", root) == (
        'services.yaml: send: env: must be a mapping of NAME: "value", not a list (line 1)'
    )
    assert parse_services("send: {env: }", root).specs[0].env == ()


def test_rules_file_must_exist(root: Path) -> None:
    text = 'smtpd:\n  listen: ["127.0.0.1:25"]\n  rules: control/missing.rules\n'
    assert error_of(text, root) == (
        f"services.yaml: smtpd: rules: file {root}/control/missing.rules does not exist (line 3)"
    )
    assert "smtpd: rules: must be a string, not an integer" in error_of(
        'smtpd: {listen: ["127.0.0.1:25"], rules: 5}', root
    )


def test_yaml_syntax_error_names_the_line(root: Path) -> None:
    msg = error_of('send: {}\nsmtpd:\n  listen: ["127.0.0.1:25"\n  env: {}\n', root)
    assert msg.startswith("services.yaml: YAML syntax error: ")
    assert "(line 4, column 3)" in msg


def test_tab_indentation_error_names_the_line(root: Path) -> None:
    msg = error_of("send:\n\tenv: {}\n", root)
    assert msg.startswith("services.yaml: YAML syntax error: ") and "line 2" in msg


def test_duplicate_keys_are_refused(root: Path) -> None:
    assert error_of("send: {}\nsend: {}\n", root) == "services.yaml: duplicate key 'send' (line 2)"


def test_top_level_and_section_shapes(root: Path) -> None:
    assert error_of("- smtpd\n", root) == (
        "services.yaml: must be a mapping of daemon sections, not a list (line 1)"
    )
    assert error_of("send: 1\n", root) == (
        "services.yaml: send: must be a mapping (use {} for no settings), not an integer (line 1)"
    )


def test_load_services_reads_the_root(root: Path) -> None:
    with pytest.raises(ConfigError, match=r"services.yaml: .*services.yaml does not exist"):
        load_services(root)
    (root / "services.yaml").write_text("send: {}\n")
    assert [s.name for s in load_services(root).specs] == ["send"]


def test_the_file_qldap_init_writes_is_valid(tmp_path: Path) -> None:
    pytest.importorskip("qldap.queue.layout")
    from qldap.setup.init import InitOptions, init_root

    init_root(InitOptions(root=tmp_path / "q", me="mx1.example.com"))
    services = load_services(tmp_path / "q")
    assert [s.name for s in services.specs] == ["smtpd", "send", "pop3d"]

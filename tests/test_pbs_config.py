"""POP-before-SMTP control files: defaults, per-role reading, illegal values."""

from __future__ import annotations

import pytest

from qldap.control.files import ControlDir
from qldap.errors import ConfigError
from qldap.pbs.config import PbsConfig, PbsRole, SecretTooLong, TooManyEnvRules, load_config
from qldap.pbs.env import EnvRule
from tests.conftest import QRoot


def test_daemon_defaults(qroot: QRoot) -> None:
    cfg = load_config(ControlDir(qroot.path), PbsRole.DAEMON)
    assert cfg == PbsConfig(ip="0.0.0.0", port=2821, secret=b"", cachesize=1048576, timeout=600)


def test_daemon_reads_its_files(qroot: QRoot) -> None:
    qroot.control("pbsip", "127.0.0.1")
    qroot.control("pbsport", "2900")
    qroot.control("pbssecret", "mekmitasdigoat  ")
    qroot.control("pbscachesize", "65536")
    qroot.control("pbstimeout", "2")
    qroot.control("pbsservers", "not an address")  # the daemon never reads it
    cfg = load_config(ControlDir(qroot.path), PbsRole.DAEMON)
    assert (cfg.ip, cfg.port, cfg.secret, cfg.cachesize, cfg.timeout) == (
        "127.0.0.1",
        2900,
        b"mekmitasdigoat",
        65536,
        2,
    )
    assert "mekmitas" not in repr(cfg)


def test_client_reads_servers_and_env(qroot: QRoot) -> None:
    qroot.control("pbsservers", "127.0.0.1\n# comment\n\n::1\n")
    qroot.control("pbsenv", "USER=TCPREMOTEINFO=[pbs]\nHOME\n")
    qroot.control("pbsip", "garbage")  # the clients never read it
    cfg = load_config(ControlDir(qroot.path), PbsRole.CLIENT)
    assert cfg.servers == ("127.0.0.1", "::1")
    assert cfg.env == (EnvRule("USER", "TCPREMOTEINFO", "[pbs]"), EnvRule("HOME"))
    assert cfg.port == 2821


def test_client_needs_servers(qroot: QRoot) -> None:
    with pytest.raises(ConfigError):
        load_config(ControlDir(qroot.path), PbsRole.CLIENT)
    qroot.control("pbsservers", "")
    with pytest.raises(ConfigError):
        load_config(ControlDir(qroot.path), PbsRole.CLIENT)
    qroot.control("pbsservers", "host.example.com")
    with pytest.raises(ConfigError):
        load_config(ControlDir(qroot.path), PbsRole.CLIENT)


def test_illegal_values(qroot: QRoot) -> None:
    ctl = ControlDir(qroot.path)
    qroot.control("pbsservers", "127.0.0.1")
    qroot.control("pbsport", "65001")
    for role in PbsRole:
        with pytest.raises(ConfigError):
            load_config(ctl, role)
    qroot.control("pbsport", "65000")
    assert load_config(ctl, PbsRole.CLIENT).port == 65000
    qroot.control("pbssecret", "s" * 256)
    with pytest.raises(SecretTooLong, match="control/pbssecret is to long"):
        load_config(ctl, PbsRole.CLIENT)
    qroot.control("pbssecret", "s" * 255)
    assert len(load_config(ctl, PbsRole.CLIENT).secret) == 255
    qroot.control("pbsenv", "\n".join(f"V{i}" for i in range(256)))
    with pytest.raises(TooManyEnvRules, match="control/pbsenvs has to many entries"):
        load_config(ctl, PbsRole.CLIENT)
    qroot.control("pbsip", "0.0.0.300")
    with pytest.raises(ConfigError):
        load_config(ctl, PbsRole.DAEMON)


def test_junk_integers_keep_the_default(qroot: QRoot) -> None:
    qroot.control("pbstimeout", "junk")
    qroot.control("pbscachesize", "4096kB")
    cfg = load_config(ControlDir(qroot.path), PbsRole.DAEMON)
    assert (cfg.timeout, cfg.cachesize) == (600, 4096)

"""What the inbound checks do for one SMTP session: off, tag only, or reject — globally, per rule, per domain.

Why three layers, as qmail-smtpd's other switches: a site turns the checks on for everyone with
``control/mailauth``, per client with the ``MAILAUTH`` variable of a qmail-smtpd.rules line (or the
``environment:`` of services.yaml; ``NOMAILAUTH`` turns them off for a rule), and per recipient domain
with ``control/mailauthdomains`` (``domain:words``, ``.suffix`` for subdomains).  The policy words
(qmail-smtpd(8), qldap-control(5)):

``tag``
    check and add Authentication-Results only (what an empty value means);
``dmarcreject``
    a DMARC ``fail`` whose disposition is ``reject`` gets ``550 5.7.1`` after DATA — only when the
    words of *every* recipient's domain say so, since one reply answers all recipients;
``spfreject``
    an SPF ``fail`` gets ``550 5.7.1`` at MAIL (domain words cannot apply: no recipient yet);
``tempfail``
    an SPF ``temperror`` (at MAIL) or a DMARC ``temperror`` (after DATA) gets ``451 4.7.1``
    instead of being accepted and tagged.

Relaying (RELAYCLIENT) and authenticated clients are never checked.  The authserv-id of the header is
``control/authservid``, else ``control/me``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from qldap.address import split_address
from qldap.control.files import ControlDir, ascii_lower
from qldap.errors import ConfigError

WORDS = frozenset({"tag", "dmarcreject", "spfreject", "tempfail"})


@dataclass(frozen=True, slots=True)
class Actions:
    """The rejections a set of policy words asks for (none = tag only)."""

    dmarc_reject: bool = False
    spf_reject: bool = False
    tempfail: bool = False

    @classmethod
    def parse(cls, text: str, where: str) -> Actions:
        """Words separated by blanks or commas.

        Raises:
            ConfigError: an unknown word.
        """
        words = {w for w in text.replace(",", " ").lower().split() if w}
        unknown = words - WORDS
        if unknown:
            raise ConfigError(f"unknown word {sorted(unknown)[0]!r} in {where}")
        return cls("dmarcreject" in words, "spfreject" in words, "tempfail" in words)


@dataclass(frozen=True, slots=True)
class InboundPolicy:
    """The checks are on for this session; what to do with their results."""

    authserv_id: str
    actions: Actions = Actions()
    domains: Mapping[str, Actions] = field(default_factory=lambda: MappingProxyType({}))

    def for_domain(self, domain: str) -> Actions:
        """The words for a recipient domain: exact entry, then ``.suffix`` entries, then the default."""
        domain = ascii_lower(domain.rstrip("."))
        found = self.domains.get(domain)
        if found is not None:
            return found
        labels = domain.split(".")
        for i in range(1, len(labels)):
            found = self.domains.get("." + ".".join(labels[i:]))
            if found is not None:
                return found
        return self.actions

    def _all(self, recipients: Iterable[str], pick: str) -> bool:
        doms = [split_address(r)[1] for r in recipients]
        return bool(doms) and all(getattr(self.for_domain(d), pick) for d in doms)

    def reject_dmarc(self, recipients: Iterable[str]) -> bool:
        """Every recipient's domain asks for DMARC rejection."""
        return self._all(recipients, "dmarc_reject")

    def tempfail_dmarc(self, recipients: Iterable[str]) -> bool:
        """Every recipient's domain asks for 451 on a DMARC temperror."""
        return self._all(recipients, "tempfail")


def load_policy(ctl: ControlDir, environ: Mapping[str, str]) -> InboundPolicy | None:
    """The session's policy from the controls and its environment; None = checks off.

    Raises:
        ConfigError: a control file is unreadable or names an unknown word.
    """
    if "NOMAILAUTH" in environ:
        return None
    env_words = environ.get("MAILAUTH")
    control = ctl.line("mailauth")
    if env_words is None and control is None:
        return None
    if env_words is not None and env_words.strip():
        actions = Actions.parse(env_words, "$MAILAUTH")
    else:
        actions = Actions.parse(control or "", "control/mailauth")
    domains = {
        ascii_lower(dom.strip()): Actions.parse(words, f"control/mailauthdomains entry {dom!r}")
        for dom, words in ctl.mapping("mailauthdomains").items()
    }
    authserv_id = ctl.line("authservid") or ctl.me()
    return InboundPolicy(authserv_id, actions, MappingProxyType(domains))

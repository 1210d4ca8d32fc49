"""The sample directory of `qldap init --demo`: a few users that show the main qmailUser features.

Why generated rather than shipped as a file: mail stores must be absolute paths inside the new root,
and the numeric ids must be ones the machine can deliver as (never 0), so both are filled in at init.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEMO_SUFFIX = "dc=example,dc=com"
DEMO_DOMAIN = "example.com"
DEMO_PASSWORD = "demo"  # every demo account's password; printed by `qldap demo`


@dataclass(frozen=True, slots=True)
class DemoIds:
    """The uid/gid the demo mailboxes belong to."""

    uid: int
    gid: int


def demo_ldif(mail_root: Path, ids: DemoIds, password_hash: str) -> str:
    """LDIF text of the demo tree under ``dc=example,dc=com``.

    Users: alice (plain Maildir, alternate address), bob (quota), carol (forward only), dave
    (Maildir plus forward), erin (auto-reply), frank (disabled), a catch-all for example.com is
    deliberately absent so unknown addresses bounce; one qmailGroup list with two members.
    """
    s = DEMO_SUFFIX
    d = DEMO_DOMAIN

    def user(uid: str, extra: str) -> str:
        return (
            f"dn: uid={uid},ou=people,{s}\n"
            "objectClass: top\nobjectClass: person\nobjectClass: inetOrgPerson\nobjectClass: qmailUser\n"
            f"uid: {uid}\ncn: {uid.capitalize()}\nsn: {uid.capitalize()}\n"
            f"mail: {uid}@{d}\n"
            f"userPassword: {password_hash}\n"
            f"qmailUID: {ids.uid}\nqmailGID: {ids.gid}\n" + extra + "\n"
        )

    store = mail_root.as_posix().rstrip("/")
    parts = [
        f"dn: {s}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\n"
        "o: Example\ndc: example\n\n",
        f"dn: ou=people,{s}\nobjectClass: top\nobjectClass: organizationalUnit\nou: people\n\n",
        f"dn: ou=groups,{s}\nobjectClass: top\nobjectClass: organizationalUnit\nou: groups\n\n",
        user(
            "alice",
            f"mailAlternateAddress: a.smith@{d}\nmailMessageStore: {store}/alice/\naccountStatus: active\n",
        ),
        user(
            "bob",
            f"mailMessageStore: {store}/bob/\nmailQuotaSize: 1000000\nmailQuotaCount: 1000\n",
        ),
        user("carol", "mailForwardingAddress: carol@elsewhere.example\ndeliveryMode: nolocal\n"),
        user(
            "dave",
            f"mailMessageStore: {store}/dave/\nmailForwardingAddress: dave@elsewhere.example\n",
        ),
        user(
            "erin",
            f"mailMessageStore: {store}/erin/\ndeliveryMode: reply\n"
            "mailReplyText: I am on holiday until Monday; your mail has been kept.\n",
        ),
        user("frank", f"mailMessageStore: {store}/frank/\naccountStatus: disabled\n"),
        (
            f"dn: cn=team,ou=groups,{s}\n"
            "objectClass: top\nobjectClass: organizationalRole\nobjectClass: qmailUser\n"
            "objectClass: qmailGroup\n"
            f"cn: team\nuid: team\nmail: team@{d}\nmailAlternateAddress: team-owner@{d}\n"
            f"mailMessageStore: {store}/team/\n"
            f"qmailUID: {ids.uid}\nqmailGID: {ids.gid}\n"
            f"dnmember: uid=alice,ou=people,{s}\n"
            f"rfc822member: dave@{d}\n\n"
        ),
    ]
    return "".join(parts)

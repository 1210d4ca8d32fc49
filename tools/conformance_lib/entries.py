"""The directory both sides read: every entry a case refers to, as LDIF with fixed password hashes.

Why fixed salts: the same LDIF is loaded once per run and the hashes must not depend on the run, so
a failing case can be reproduced by hand (``qmail-ldaplookup -u alice -p alicepw`` on both sides).
``{mail}`` stands for the run's mail directory (message stores live below it).
"""

from __future__ import annotations

import base64
import hashlib

from .world import GID, SUFFIX, UID


def ssha(password: str, salt: bytes = b"fixedslt") -> str:
    """``{SSHA}`` of *password* with *salt* (RFC 2307 style, salt appended to the digest)."""
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def sha(password: str) -> str:
    """``{SHA}`` of *password*."""
    return "{SHA}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


def md5(password: str) -> str:
    """``{MD5}`` of *password*."""
    return "{MD5}" + base64.b64encode(hashlib.md5(password.encode()).digest()).decode()


def md5_crypt(password: str) -> str:
    """``{crypt}`` with an MD5-crypt (``$1$``) hash of *password* under a fixed salt."""
    from passlib.hash import md5_crypt as scheme

    return "{crypt}" + str(scheme.using(salt="fixedslt").hash(password))


def _user(uid: str, mail: str, *extra: str, store: str | None = None, pw: str | None = None) -> str:
    lines = [
        f"dn: uid={uid},ou=people,{SUFFIX}",
        "objectClass: top", "objectClass: person", "objectClass: inetOrgPerson", "objectClass: qmailUser",
        f"uid: {uid}", f"cn: {uid}", f"sn: {uid}", f"mail: {mail}",
        f"qmailUID: {UID}", f"qmailGID: {GID}",
        f"mailMessageStore: {store if store is not None else '{mail}/' + uid + '/'}",
    ]  # fmt: skip
    if pw is not None:
        lines.append(f"userPassword: {pw}")
    lines.extend(extra)
    return "\n".join(lines) + "\n"


def entries() -> str:
    """The whole LDIF (without the suffix entry, which the slapd helper adds)."""
    people = f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n"
    users = [
        _user("alice", "alice@example.org", "mailAlternateAddress: alice.alt@example.org",
              "mailAlternateAddress: al@example.org", "accountStatus: active", pw=ssha("alicepw")),
        _user("bob", "bob@example.org", "mailForwardingAddress: bob@elsewhere.net",
              "deliveryMode: forwardonly", pw=sha("bobpw")),
        _user("carol", "carol@example.org", "mailQuotaSize: 1000", "mailQuotaCount: 100", pw=md5("carolpw")),
        _user("dave", "dave@example.org", "accountStatus: disabled", pw=ssha("davepw")),
        _user("erin", "erin@example.org", "accountStatus: noaccess", pw=ssha("erinpw")),
        _user("frank", "frank@example.org", "deliveryMode: reply",
              "mailReplyText: I am away until Monday.", pw=md5_crypt("frankpw")),
        _user("gina", "gina@example.org", "accountStatus: deleted", pw=ssha("ginapw")),
        _user("hank", "hank@example.org", "deliveryProgramPath: /bin/true", pw=ssha("hankpw")),
        _user("ivan", "ivan@example.org", "mailForwardingAddress: ivan@elsewhere.net", pw=ssha("ivanpw")),
        _user("jack", "jack@example.org", "mailHost: other.example.org", pw=ssha("jackpw")),
        _user("kate", "kate@example.org", "deliveryMode: noforward",
              "mailForwardingAddress: kate@elsewhere.net", pw=ssha("katepw")),
        _user("leo", "leo@example.org", "deliveryMode: nolocal",
              "mailForwardingAddress: leo@elsewhere.net", pw=ssha("leopw")),
        _user("mona", "mona@example.org", "deliveryMode: nombox", "deliveryProgramPath: /bin/true",
              pw=ssha("monapw")),
        _user("nick", "nick@example.org", "mailForwardingAddress: nick1@elsewhere.net",
              "mailForwardingAddress: nick2@elsewhere.net", "deliveryMode: noprogram",
              "deliveryProgramPath: /bin/false", pw=ssha("nickpw")),
        _user("olga", "olga@example.org", "mailQuotaSize: 100000000", "mailQuotaCount: 1", pw=ssha("olgapw")),
        _user("paul", "paul@example.org", pw="plainpw"),
        _user("catchall", "catchall@example.org", pw=ssha("catchpw")),
        _user("dashcatch", "list-catchall@example.org", pw=ssha("dashpw")),
        _user("dashexact", "list-info@example.org", pw=ssha("dashpw")),
        _user("quinn", "quinn@sub.example.org", pw=ssha("quinnpw")),
        # local delivery (tools/conformance_lib/local.py); {mail}/bin/record is the recording program
        _user("rita", "rita@example.org", "homeDirectory: {mail}/rita/", store="./Mailbox",
              pw=ssha("ritapw")),
        _user("sam", "sam@example.org", "homeDirectory: {mail}/sam/", store="./Maildir/", pw=ssha("sampw")),
        _user("tina", "tina@example.org", "qmailDotMode: both",
              "deliveryProgramPath: {mail}/bin/record tina",
              "mailForwardingAddress: tina@elsewhere.net", pw=ssha("tinapw")),
        _user("uma", "uma@example.org", "qmailDotMode: dotonly", "mailForwardingAddress: uma@elsewhere.net",
              "mailAlternateAddress: uma-catchall@example.org", pw=ssha("umapw")),
        _user("vera", "vera@example.org", "qmailDotMode: both",
              "mailAlternateAddress: vera-catchall@example.org",
              pw=ssha("verapw")),
        _user("walt", "walt@example.org", "qmailDotMode: ldapwithprog",
              "deliveryProgramPath: {mail}/bin/record",
              pw=ssha("waltpw")),
        _user("wade", "wade@example.org", "qmailDotMode: ldapwithprog",
              "deliveryProgramPath: {mail}/bin/record 100", pw=ssha("wadepw")),
        _user("wynn", "wynn@example.org", "qmailDotMode: ldapwithprog",
              "deliveryProgramPath: {mail}/bin/record 111", pw=ssha("wynnpw")),
        _user("wren", "wren@example.org", "qmailDotMode: ldapwithprog",
              "deliveryProgramPath: {mail}/bin/record 99", "mailForwardingAddress: wren@elsewhere.net",
              pw=ssha("wrenpw")),
        _user("xena", "xena@example.org", "mailSizeMax: 100", pw=ssha("xenapw")),
        _user("yves", "yves@example.org", "mailSizeMax: 100000", pw=ssha("yvespw")),
        _user("zara", "zara@example.org", "deliveryMode: forwardonly", "deliveryMode: reply",
              "mailReplyText: Gone fishing.", "mailForwardingAddress: zara@elsewhere.net", pw=ssha("zarapw")),
        _user("zoe", "zoe@example.org", "deliveryMode: nolocal", "deliveryMode: reply",
              "mailReplyText:: " + base64.b64encode(b"Subject: Away\nX-Note: kept\n\nBack soon.\n").decode(),
              pw=ssha("zoepw")),
        _user("xavier", "xavier@example.org", pw=ssha("xavierpw")),
        _user("nora", "nora@example.org", "accountStatus: nopop", pw=ssha("norapw")),
        _user("kim", "kim@example.org", store="kim/", pw=ssha("kimpw")),
        _user("rosa", "rosa@example.org", "homeDirectory: {mail}/rosa/", "mailQuotaSize: 500",
              store="./Mailbox", pw=ssha("rosapw")),
        # entries a careful server must refuse or handle with care
        _user("ivy", "ivy@example.org", "qmailDotMode: ldapwithprog",
              "deliveryProgramPath: /bin/echo hi; touch /tmp/qldap-conformance-ivy", pw=ssha("ivypw")),
        _user("pat", "pat@example.org", store="{mail}/pat/../alice/", pw=ssha("patpw")),
        _user("otto", "otto@example.org", pw=ssha("ottopw")).replace(f"qmailUID: {UID}", "qmailUID: 0"),
        _user("gus", "gus@example.org", "qmailDotMode: sometimes", pw=ssha("guspw")),
        _user("lex", "lex@example.org", "deliveryMode: vacation", "deliveryMode: noforward",
              "mailForwardingAddress: lex@elsewhere.net", pw=ssha("lexpw")),
        _user("fay", "fay@example.org", "deliveryMode: reply", "mailReplyText:: " + base64.b64encode(
            b"%HEADER%\nSubject: Re: %SUBJECT%\nFrom: Fay <fay@example.org>\nTo: evil@x.example\n"
            b"Bcc: hidden@x.example\nX-Trace: kept\nContent-Type: text/plain; charset=iso-8859-1\n\n"
            b"Away until %SUBJECT% is over.\n").decode(), pw=ssha("faypw")),
        _user("hugo", "hugo@example.org", "accountStatus: Holiday", pw=ssha("hugopw")),
        _user("ada", "ada@example.org", "accountStatus: ACTIVE", pw=ssha("adapw")),
    ]  # fmt: skip
    return "\n".join([people, *users])

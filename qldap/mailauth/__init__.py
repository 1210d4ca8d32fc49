"""Mail authentication: DKIM signing of outgoing mail, and SPF, DKIM, DMARC checks of incoming mail.

Why a package of its own: the receivers (``smtpd``, ``inject``) and the bounce writer (``send``)
all sign or check messages, and none of them may import another's package (docs/architecture.md).
The modules here are pure where they can be — a message's bytes and a frozen configuration in,
a header line or a verdict out — and the cryptography is left to dkimpy, a well-kept library; the
control files that name keys and policies are read through ``qldap.control`` (qldap-control(5)).
Everything is off unless configured, and a failure here never loses mail (docs/mailauth.md).
"""

"""The SMTP receiving daemon (qmail-smtpd)."""

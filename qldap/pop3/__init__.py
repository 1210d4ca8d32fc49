"""POP3: qmail-popup and qmail-pop3d."""

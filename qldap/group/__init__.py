"""qmailGroup lists: qmail-group and qmail-secretary."""

"""Local delivery: LDAP resolution, .qmail, Maildir/mbox/program/forward, quota, reply."""

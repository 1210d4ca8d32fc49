"""The directory layer: every question asked of LDAP (or the embedded LDIF) about users and groups."""

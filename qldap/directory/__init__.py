"""The directory layer: every question asked of LDAP (or the embedded LDIF) about users and groups.

Entry points: :func:`qldap.directory.open.open_directory` returns a
:class:`qldap.directory.lookup.Directory`, whose lookups answer with the result types of
:mod:`qldap.directory.base` (Found | NotFound | Ambiguous | Unavailable | Trash).
"""

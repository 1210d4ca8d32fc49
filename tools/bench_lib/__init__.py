"""Building blocks of ``tools/bench``: process accounting, the SMTP load generator, the shared LDAP
world, the two servers under test (qldap and a private Postfix) and the side-by-side report.

Kept as an importable package (not inside the script) so that each piece stays small and typed, and
so that tests and other tools can drive the same load generator the benchmark uses.
"""

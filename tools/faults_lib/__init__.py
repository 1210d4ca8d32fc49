"""The fault-injection battery behind ``tools/faults``: a private world, SMTP load, faults, accounting.

Split into: :mod:`faults_lib.world` (temporary root, private slapd, LDAP users, ``qldap up``),
:mod:`faults_lib.load` (the SMTP load generator that records every reply), :mod:`faults_lib.sink`
(the controllable remote SMTP sink), :mod:`faults_lib.account` (who got what: delivered, bounced,
queued, lost), :mod:`faults_lib.scenarios` (kill, ldap, disk, remote) and :mod:`faults_lib.report`
(the table and the JSON).
"""
